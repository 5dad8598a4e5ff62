//! A `WHERE` clause assembled from optional filters, with its parameters kept in the
//! order they are numbered, so a query never miscounts `$N`.

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::QueryAs;

enum Param {
    Text(String),
    Number(i64),
}

#[derive(Default)]
pub(super) struct Where {
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    /// The placeholder for a new text parameter.
    pub fn text(&mut self, value: impl Into<String>) -> String {
        self.params.push(Param::Text(value.into()));
        format!("${}", self.params.len())
    }

    /// The placeholder for a new number parameter.
    pub fn number(&mut self, value: i64) -> String {
        self.params.push(Param::Number(value));
        format!("${}", self.params.len())
    }

    pub fn condition(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// `column = <value>` when a value is given.
    pub fn equals(&mut self, column: &str, value: Option<&str>) {
        if let Some(value) = value {
            let param = self.text(value);
            self.conditions.push(format!("{column} = {param}"));
        }
    }

    /// `<comparison> <value>` (such as `at_ms >=`) when a value is given.
    pub fn compare(&mut self, comparison: &str, value: Option<i64>) {
        if let Some(value) = value {
            let param = self.number(value);
            self.conditions.push(format!("{comparison} {param}"));
        }
    }

    /// ` WHERE a AND b`, or nothing.
    pub fn clause(&self) -> String {
        if self.conditions.is_empty() { String::new() } else { format!(" WHERE {}", self.conditions.join(" AND ")) }
    }

    /// Binds every parameter, in order.
    pub fn bind<'q, O>(
        self,
        mut query: QueryAs<'q, Any, O, AnyArguments<'q>>,
    ) -> QueryAs<'q, Any, O, AnyArguments<'q>> {
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Number(number) => query.bind(number),
            };
        }
        query
    }
}
