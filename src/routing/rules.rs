//! Rule conditions (`when`): compiled from the policy file, checked against a request.
//! Every condition is optional; a rule matches when all of its conditions hold.

use std::fmt;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use regex::Regex;

use super::glob::{Glob, any_matches};
use super::input::{Needs, RouteInput};
use super::pii::{PiiClass, PiiDetector};
use super::policy::file::{NeedName, PiiConditionFile, TimeWindowFile, WhenFile};

#[derive(Debug, Default)]
pub struct Conditions {
    models: Vec<Glob>,
    keys: Vec<Glob>,
    teams: Vec<Glob>,
    users: Vec<Glob>,
    tags: Vec<String>,
    prompt_tokens: Option<(Option<u64>, Option<u64>)>,
    needs: Needs,
    pii: Option<PiiCondition>,
    time: Option<TimeWindow>,
    last_user_message: Option<Regex>,
}

#[derive(Debug)]
enum PiiCondition {
    Any,
    Classes(Vec<PiiClass>),
}

#[derive(Debug)]
struct TimeWindow {
    from: Time,
    to: Time,
    zone: TimeZone,
    /// Empty: every day.
    days: Vec<Weekday>,
}

/// Why a rule did not match: the first condition that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Model,
    Key,
    Team,
    User,
    Tags,
    Needs,
    Time,
    PromptTokens(u64),
    Pii,
    LastUserMessage,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Model => f.write_str("the requested model is not in `when.model`"),
            Mismatch::Key => f.write_str("the key is not in `when.key`"),
            Mismatch::Team => f.write_str("the team is not in `when.team`"),
            Mismatch::User => f.write_str("the end user is not in `when.user`"),
            Mismatch::Tags => f.write_str("no tag of `when.tags` is on the request"),
            Mismatch::Needs => f.write_str("the request does not need everything in `when.needs`"),
            Mismatch::Time => f.write_str("outside `when.time`"),
            Mismatch::PromptTokens(count) => write!(f, "prompt is ~{count} tokens, outside `when.prompt_tokens`"),
            Mismatch::Pii => f.write_str("no PII of the listed classes found"),
            Mismatch::LastUserMessage => f.write_str("the last user message does not match `when.last_user_message`"),
        }
    }
}

impl Conditions {
    /// `Ok(())` when every condition holds; otherwise the first that does not.
    /// Cheap checks run first so most rules are decided without scanning text.
    pub fn check(&self, input: &RouteInput, detector: &PiiDetector) -> Result<(), Mismatch> {
        if !self.models.is_empty() && !any_matches(&self.models, input.requested) {
            return Err(Mismatch::Model);
        }
        if !self.keys.is_empty() && !input.key_id.is_some_and(|key| any_matches(&self.keys, key)) {
            return Err(Mismatch::Key);
        }
        if !self.teams.is_empty() && !input.team.is_some_and(|team| any_matches(&self.teams, team)) {
            return Err(Mismatch::Team);
        }
        if !self.users.is_empty() && !input.end_user.is_some_and(|user| any_matches(&self.users, user)) {
            return Err(Mismatch::User);
        }
        if !self.tags.is_empty() && !input.tags.iter().any(|tag| self.tags.iter().any(|want| want == tag)) {
            return Err(Mismatch::Tags);
        }
        let needs = input.needs;
        if (self.needs.tools && !needs.tools)
            || (self.needs.json_schema && !needs.json_schema)
            || (self.needs.vision && !needs.vision)
        {
            return Err(Mismatch::Needs);
        }
        if let Some(window) = &self.time
            && !window.contains(input.now)
        {
            return Err(Mismatch::Time);
        }
        if let Some((min, max)) = self.prompt_tokens {
            let count = input.prompt_tokens(true);
            if min.is_some_and(|min| count < min) || max.is_some_and(|max| count > max) {
                return Err(Mismatch::PromptTokens(count));
            }
        }
        if let Some(pii) = &self.pii {
            let found = input.pii_classes(detector);
            let matched = match pii {
                PiiCondition::Any => !found.is_empty(),
                PiiCondition::Classes(wanted) => found.iter().any(|class| wanted.contains(class)),
            };
            if !matched {
                return Err(Mismatch::Pii);
            }
        }
        if let Some(pattern) = &self.last_user_message
            && !input.last_user_message.as_deref().is_some_and(|text| pattern.is_match(text))
        {
            return Err(Mismatch::LastUserMessage);
        }
        Ok(())
    }

    /// Compiles `when`; `custom_pii` are the admin-defined class names. Errors name the field.
    pub fn compile(when: &WhenFile, custom_pii: &[String]) -> Result<Conditions, String> {
        let globs = |list: &Option<Vec<String>>| list.iter().flatten().map(|p| Glob::new(p)).collect();
        let pii = match when.pii.as_ref().map(|p| p.get_ref()) {
            None => None,
            Some(PiiConditionFile::Any(word)) if word == "any" => Some(PiiCondition::Any),
            Some(PiiConditionFile::Any(other)) => {
                return Err(format!("`when.pii` is \"any\" or a list of classes, not {other:?}"));
            }
            Some(PiiConditionFile::Classes(names)) => {
                let classes = names.iter().map(|name| pii_class(name, custom_pii)).collect::<Result<Vec<_>, _>>()?;
                Some(PiiCondition::Classes(classes))
            }
        };
        let last_user_message = match &when.last_user_message {
            None => None,
            Some(pattern) => Some(
                regex::RegexBuilder::new(pattern.get_ref())
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("`when.last_user_message` is not a valid regex: {e}"))?,
            ),
        };
        let needs = when.needs.iter().flatten().fold(Needs::default(), |mut needs, need| {
            match need {
                NeedName::Tools => needs.tools = true,
                NeedName::JsonSchema => needs.json_schema = true,
                NeedName::Vision => needs.vision = true,
            }
            needs
        });
        Ok(Conditions {
            models: globs(&when.model),
            keys: globs(&when.key),
            teams: globs(&when.team),
            users: globs(&when.user),
            tags: when.tags.clone().unwrap_or_default(),
            prompt_tokens: when.prompt_tokens.as_ref().map(|range| (range.get_ref().min, range.get_ref().max)),
            needs,
            pii,
            time: when.time.as_ref().map(|t| TimeWindow::compile(t.get_ref())).transpose()?,
            last_user_message,
        })
    }
}

/// A built-in or admin-defined PII class by name.
pub fn pii_class(name: &str, custom: &[String]) -> Result<PiiClass, String> {
    if let Some(class) = PiiClass::builtin(name) {
        return Ok(class);
    }
    match custom.iter().find(|c| *c == name) {
        Some(custom) => Ok(PiiClass::Custom(custom.as_str().into())),
        None => Err(format!(
            "unknown PII class {name:?}; built in: {}, or one defined under [pii_classes]",
            PiiClass::BUILTIN_NAMES.join(", ")
        )),
    }
}

impl TimeWindow {
    fn compile(file: &TimeWindowFile) -> Result<TimeWindow, String> {
        let time = |raw: &str| {
            raw.parse::<Time>().map_err(|e| format!("`when.time` times are HH:MM, such as \"22:00\": {raw:?}: {e}"))
        };
        let zone = match &file.timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?,
        };
        let days = file.days.iter().flatten().map(|day| weekday(day)).collect::<Result<Vec<_>, _>>()?;
        Ok(TimeWindow { from: time(&file.from)?, to: time(&file.to)?, zone, days })
    }

    fn contains(&self, now: jiff::Timestamp) -> bool {
        let local = now.to_zoned(self.zone.clone());
        let time = local.time();
        if !self.days.is_empty() && !self.days.contains(&local.weekday()) {
            return false;
        }
        if self.from <= self.to { self.from <= time && time < self.to } else { time >= self.from || time < self.to }
    }
}

fn weekday(name: &str) -> Result<Weekday, String> {
    Ok(match name.to_ascii_lowercase().get(..3).unwrap_or_default() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return Err(format!("unknown day {name:?}; use mon, tue, wed, thu, fri, sat, sun")),
    })
}
