//! Policies: the routing rules admins write in `policies/*.toml`, compiled against the
//! provider registry into a [`Policy`] that plans requests. Compiling checks everything
//! (aliases, targets, regexes, time zones) so a policy that compiles cannot fail later;
//! problems are reported as `file:line:col: message`.

pub mod file;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use self::file::{AliasFile, PolicyFile, RuleFile};
use super::Target;
use super::health::{BreakerSettings, Health};
use super::pii::PiiDetector;
use super::rules::Conditions;
use super::strategy::Strategy;
use crate::config::{DataFile, Problem};
use crate::providers::Registry;

/// A rule's privacy action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privacy {
    /// Only `locality = "local"` targets; never a cloud fallback.
    LocalOnly,
    /// Each PII value is replaced by a placeholder before it leaves, and restored in the answer.
    Redact,
    /// Requests containing PII are refused (400), naming the classes found.
    Block,
}

/// A compiled, validated set of policy files.
pub struct Policy {
    /// Counts accepted policy changes since start (0 for the policy loaded at start).
    pub version: u64,
    pub sources: Vec<DataFile>,
    /// SHA-256 of every file's path and text, in hex: changes with any edit.
    pub digest: String,
    pub aliases: BTreeMap<String, Alias>,
    /// In evaluation order: priority high to low, then file order.
    pub rules: Vec<Rule>,
    /// Applies when no rule matches.
    pub default: Actions,
    pub breaker: BreakerSettings,
    pub detector: Arc<PiiDetector>,
}

pub struct Alias {
    pub route: Route,
    pub description: Option<String>,
}

/// Where a request may go, and in which order to try.
#[derive(Clone)]
pub struct Route {
    /// As written: an alias name or the list of targets.
    pub label: String,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// Per target, for `weighted`; empty otherwise.
    pub weights: Vec<u32>,
}

pub struct Rule {
    pub name: String,
    pub priority: i64,
    /// `file:line` of the rule, for explanations.
    pub origin: String,
    pub when: Conditions,
    pub actions: Actions,
}

/// What a matched rule (or the default) does.
#[derive(Clone)]
pub struct Actions {
    /// `None`: the requested model or alias decides the targets.
    pub route: Option<Route>,
    /// Overrides the requested alias's strategy when the rule names no targets.
    pub strategy: Option<Strategy>,
    pub privacy: Option<Privacy>,
    pub reject: Option<Reject>,
    /// Ceiling on the request's output tokens.
    pub max_tokens: Option<u32>,
    /// Assumed output length for `cheapest` when the request sets no limit.
    pub expected_output_tokens: u32,
    pub attempts: AttemptSettings,
    pub downgrade: Option<Downgrade>,
}

#[derive(Debug, Clone)]
pub struct Reject {
    pub status: u16,
    pub message: String,
}

/// When the caller's budget is more than `spent_fraction` used, route here instead.
#[derive(Clone)]
pub struct Downgrade {
    pub spent_fraction: f64,
    pub route: Route,
}

/// Retries, backoff and timeouts for a request's upstream attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttemptSettings {
    /// Extra tries of the same target after a retryable failure, before the next target.
    pub retries: u32,
    #[serde(serialize_with = "millis")]
    pub backoff: Duration,
    /// Longest wait between tries; a longer `Retry-After` moves on to the next target instead.
    #[serde(serialize_with = "millis")]
    pub max_backoff: Duration,
    /// Overall budget for all attempts of a request.
    #[serde(serialize_with = "optional_millis")]
    pub deadline: Option<Duration>,
    /// Until the upstream's first byte (a stream's first content); default: the provider's request timeout.
    #[serde(serialize_with = "optional_millis")]
    pub first_byte_timeout: Option<Duration>,
    /// One whole attempt, stream included.
    #[serde(serialize_with = "optional_millis")]
    pub total_timeout: Option<Duration>,
}

impl Default for AttemptSettings {
    fn default() -> Self {
        AttemptSettings {
            retries: 1,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            deadline: None,
            first_byte_timeout: None,
            total_timeout: None,
        }
    }
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis() as u64)
}

fn optional_millis<S: serde::Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => millis(duration, serializer),
        None => serializer.serialize_none(),
    }
}

const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 = 500;
/// Aliases may name aliases; deeper nesting than this is a cycle or a mistake.
const MAX_ALIAS_DEPTH: usize = 8;

impl Policy {
    /// The policy used when `policies/` is empty: every request goes where it asks.
    pub fn empty() -> Policy {
        Policy {
            version: 0,
            sources: Vec::new(),
            digest: digest(&[]),
            aliases: BTreeMap::new(),
            rules: Vec::new(),
            default: Actions::builtin(),
            breaker: BreakerSettings::default(),
            detector: Arc::new(PiiDetector::default()),
        }
    }
}

impl Actions {
    fn builtin() -> Actions {
        Actions {
            route: None,
            strategy: None,
            privacy: None,
            reject: None,
            max_tokens: None,
            expected_output_tokens: DEFAULT_EXPECTED_OUTPUT_TOKENS,
            attempts: AttemptSettings::default(),
            downgrade: None,
        }
    }
}

pub fn digest(files: &[DataFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.path.as_bytes());
        hasher.update([0]);
        hasher.update(file.text.as_bytes());
        hasher.update([0]);
    }
    crate::keys::hex(&hasher.finalize())
}

/// Compiles every policy file together (aliases may be used across files). Returns every
/// problem found, not just the first.
pub fn compile(files: &[DataFile], registry: &Registry, health: &Health) -> Result<Policy, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for file in files {
        match toml::from_str::<PolicyFile>(&file.text) {
            Ok(policy) => parsed.push((file, policy)),
            Err(error) => problems.push(Problem::from_toml(&file.path, &file.text, &error)),
        }
    }
    let mut compiler = Compiler { registry, health, aliases: BTreeMap::new(), problems: Vec::new() };

    let mut custom_pii = Vec::new();
    let mut alias_files: BTreeMap<&str, (&DataFile, &Spanned<AliasFile>)> = BTreeMap::new();
    let mut default: Option<(&DataFile, &Spanned<RuleFile>)> = None;
    let mut breaker: Option<(&DataFile, &Spanned<file::BreakerFile>)> = None;
    for (file, policy) in &parsed {
        for (name, pattern) in &policy.pii_classes {
            let at = |message: String| Problem::at_span(&file.path, &file.text, Some(pattern.span()), message);
            if super::pii::PiiClass::builtin(name).is_some() || custom_pii.iter().any(|(n, _): &(String, _)| n == name)
            {
                problems.push(at(format!("PII class {name:?} is already defined")));
            } else if !is_valid_name(name) {
                problems.push(at(format!("PII class name {name:?} must be lowercase letters, digits or `_`")));
            } else {
                match regex::RegexBuilder::new(pattern.get_ref()).size_limit(1 << 20).build() {
                    Ok(regex) => custom_pii.push((name.clone(), regex)),
                    Err(error) => problems.push(at(format!("PII class {name:?} is not a valid regex: {error}"))),
                }
            }
        }
        for (name, alias) in &policy.aliases {
            if registry.get(name.split('/').next().unwrap_or_default()).is_some() && name.contains('/') {
                problems.push(file_problem(file, alias.span(), format!("alias {name:?} looks like provider/model")));
            } else if alias_files.insert(name, (file, alias)).is_some() {
                problems.push(file_problem(file, alias.span(), format!("alias {name:?} is defined twice")));
            }
        }
        if let Some(rule) = &policy.default
            && default.replace((file, rule)).is_some()
        {
            problems.push(file_problem(file, rule.span(), "only one policy file may have a [default]".into()));
        }
        if let Some(settings) = &policy.circuit_breaker
            && breaker.replace((file, settings)).is_some()
        {
            problems.push(file_problem(
                file,
                settings.span(),
                "only one policy file may have a [circuit_breaker]".into(),
            ));
        }
    }
    let custom_names: Vec<String> = custom_pii.iter().map(|(name, _)| name.clone()).collect();

    for (name, (file, alias)) in &alias_files {
        let mut stack = Vec::new();
        let _ = compiler.alias(name, file, alias, &alias_files, &mut stack);
    }

    let builtin = Actions::builtin();
    let default_actions = match default {
        None => builtin,
        Some((file, rule)) => {
            let rule = rule.get_ref();
            if rule.name.is_some() || rule.when.is_some() || rule.priority.is_some() {
                compiler.problems.push(file_problem(
                    file,
                    0..0,
                    "[default] applies when no rule matches: it has no name, priority or when".into(),
                ));
            }
            compiler.actions(file, rule, &builtin, &alias_files).unwrap_or(builtin)
        }
    };

    let mut rules: Vec<Rule> = Vec::new();
    for (file, policy) in &parsed {
        for rule in &policy.rules {
            let span = rule.span();
            let at = |message: String| file_problem(file, span.clone(), message);
            let Some(name) = rule.get_ref().name.as_ref().map(|n| n.get_ref().clone()) else {
                compiler.problems.push(at("every rule needs a `name`".into()));
                continue;
            };
            if rules.iter().any(|r| r.name == name) {
                compiler.problems.push(at(format!("rule name {name:?} is used twice")));
                continue;
            }
            let when = match &rule.get_ref().when {
                None => Ok(Conditions::default()),
                Some(when) => Conditions::compile(when.get_ref(), &custom_names)
                    .map_err(|message| file_problem(file, when.span(), format!("rule {name:?}: {message}"))),
            };
            let actions = compiler.actions(file, rule.get_ref(), &default_actions, &alias_files);
            match (when, actions) {
                (Ok(when), Some(actions)) => rules.push(Rule {
                    priority: rule.get_ref().priority.unwrap_or(0),
                    origin: format!("{}:{}", file.path, at(String::new()).line),
                    name,
                    when,
                    actions,
                }),
                (Err(problem), _) => compiler.problems.push(problem),
                _ => {}
            }
        }
    }
    // Stable: equal priorities keep file order.
    rules.sort_by_key(|rule| std::cmp::Reverse(rule.priority));

    let breaker = breaker.map_or_else(BreakerSettings::default, |(_, settings)| {
        let file = settings.get_ref();
        let defaults = BreakerSettings::default();
        BreakerSettings {
            consecutive_failures: file.consecutive_failures.unwrap_or(defaults.consecutive_failures),
            error_rate: file.error_rate.unwrap_or(defaults.error_rate),
            window: file.window.unwrap_or(defaults.window),
            cooldown: file.cooldown_ms.map_or(defaults.cooldown, Duration::from_millis),
        }
    });
    if let Some((file, settings)) = breaker_origin(&parsed)
        && !(0.0..=1.0).contains(&breaker.error_rate)
    {
        compiler.problems.push(file_problem(file, settings, "`error_rate` is a share between 0 and 1".into()));
    }

    problems.append(&mut compiler.problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let aliases = compiler.aliases.into_iter().filter_map(|(name, alias)| Some((name, alias?))).collect();
    Ok(Policy {
        version: 0,
        digest: digest(files),
        sources: files.to_vec(),
        aliases,
        rules,
        default: default_actions,
        breaker,
        detector: Arc::new(PiiDetector::new(custom_pii)),
    })
}

fn breaker_origin<'a>(parsed: &'a [(&'a DataFile, PolicyFile)]) -> Option<(&'a DataFile, std::ops::Range<usize>)> {
    parsed.iter().find_map(|(file, policy)| policy.circuit_breaker.as_ref().map(|b| (*file, b.span())))
}

fn file_problem(file: &DataFile, span: std::ops::Range<usize>, message: String) -> Problem {
    Problem::at_span(&file.path, &file.text, Some(span), message)
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

type AliasFiles<'a> = BTreeMap<&'a str, (&'a DataFile, &'a Spanned<AliasFile>)>;

struct Compiler<'a> {
    registry: &'a Registry,
    health: &'a Health,
    /// Compiled aliases; `None` for one that failed (reported once).
    aliases: BTreeMap<String, Option<Alias>>,
    problems: Vec<Problem>,
}

impl Compiler<'_> {
    fn alias(
        &mut self,
        name: &str,
        file: &DataFile,
        alias: &Spanned<AliasFile>,
        all: &AliasFiles,
        stack: &mut Vec<String>,
    ) -> Option<Route> {
        if let Some(done) = self.aliases.get(name) {
            return done.as_ref().map(|alias| alias.route.clone());
        }
        if stack.iter().any(|n| n == name) || stack.len() > MAX_ALIAS_DEPTH {
            self.problems.push(file_problem(
                file,
                alias.span(),
                format!("alias {name:?} refers to itself: {} → {name}", stack.join(" → ")),
            ));
            self.aliases.insert(name.to_owned(), None);
            return None;
        }
        stack.push(name.to_owned());
        let spec = alias.get_ref();
        let route = self.route(file, &spec.targets, spec.strategy, spec.weights.as_ref(), all, stack);
        stack.pop();
        let route = route.map(|mut route| {
            route.label = name.to_owned();
            route
        });
        self.aliases
            .insert(name.to_owned(), route.clone().map(|route| Alias { route, description: spec.description.clone() }));
        route
    }

    /// Expands target names (aliases, `provider/model`, globs, bare model ids) into a route.
    fn route(
        &mut self,
        file: &DataFile,
        entries: &[Spanned<String>],
        strategy: Option<Strategy>,
        weights: Option<&Spanned<Vec<u32>>>,
        all: &AliasFiles,
        stack: &mut Vec<String>,
    ) -> Option<Route> {
        let mut targets: Vec<Target> = Vec::new();
        let mut target_weights = Vec::new();
        let mut ok = true;
        // A single alias entry inherits the alias's strategy and weights.
        let mut inherited: Option<(Strategy, Vec<u32>)> = None;
        for (i, entry) in entries.iter().enumerate() {
            let name = entry.get_ref();
            let expanded = match all.get(name.as_str()) {
                Some((alias_file, alias)) => match self.alias(name, alias_file, alias, all, stack) {
                    Some(route) => {
                        if entries.len() == 1 {
                            inherited = Some((route.strategy, route.weights.clone()));
                        }
                        Ok(route.targets)
                    }
                    None => {
                        ok = false;
                        continue;
                    }
                },
                None => self.expand(name),
            };
            match expanded {
                Ok(expanded) => {
                    if let Some(weights) = weights.filter(|_| strategy == Some(Strategy::Weighted)) {
                        if expanded.len() != 1 {
                            self.problems.push(file_problem(
                                file,
                                entry.span(),
                                format!("{name:?} names {} models; a weighted target must name one", expanded.len()),
                            ));
                            ok = false;
                        }
                        target_weights.push(weights.get_ref().get(i).copied().unwrap_or(0));
                    }
                    for target in expanded {
                        if !targets.iter().any(|t| t.name() == target.name()) {
                            targets.push(target);
                        }
                    }
                }
                Err(message) => {
                    self.problems.push(file_problem(file, entry.span(), message));
                    ok = false;
                }
            }
        }
        let (strategy, weights_out) = match (strategy, inherited) {
            (Some(Strategy::Weighted), _) => {
                let Some(weights) = weights else {
                    let span = entries.first().map_or(0..0, Spanned::span);
                    self.problems.push(file_problem(file, span, "strategy \"weighted\" needs `weights`".into()));
                    return None;
                };
                if weights.get_ref().len() != entries.len() || weights.get_ref().iter().all(|w| *w == 0) {
                    self.problems.push(file_problem(
                        file,
                        weights.span(),
                        format!("`weights` needs one number per target ({}), not all zero", entries.len()),
                    ));
                    return None;
                }
                (Strategy::Weighted, target_weights)
            }
            (Some(strategy), _) => (strategy, Vec::new()),
            (None, Some((strategy, weights))) => (strategy, weights),
            (None, None) => (Strategy::Ordered, Vec::new()),
        };
        if entries.is_empty() {
            self.problems.push(file_problem(file, 0..0, "`targets` is empty".into()));
            return None;
        }
        let label = entries.iter().map(|e| e.get_ref().as_str()).collect::<Vec<_>>().join(", ");
        ok.then_some(Route { label, targets, strategy, weights: weights_out })
    }

    /// `provider/model`, `provider/glob*`, `*/glob`, or a bare model id listed by one provider.
    fn expand(&self, name: &str) -> Result<Vec<Target>, String> {
        let Some((provider_pattern, model_pattern)) = name.split_once('/') else {
            let listing: Vec<_> = self.registry.iter().filter(|p| p.spec.model(name).is_some()).collect();
            return match listing.as_slice() {
                [provider] => Ok(vec![Target::new(provider, name, self.health)]),
                [] => Err(format!("no provider lists the model {name:?}, and no alias has that name")),
                several => Err(format!(
                    "model {name:?} is listed by several providers ({}); write provider/model",
                    several.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ")
                )),
            };
        };
        let provider_glob = super::glob::Glob::new(provider_pattern);
        let model_glob = super::glob::Glob::new(model_pattern);
        let providers: Vec<_> = self.registry.iter().filter(|p| provider_glob.matches(p.id())).collect();
        if providers.is_empty() {
            return Err(format!("no provider is called {provider_pattern:?} (see providers/)"));
        }
        let mut targets = Vec::new();
        for provider in providers {
            if model_glob.is_literal() {
                if provider.spec.model(model_pattern).is_some() || provider.spec.allow_unlisted_models {
                    targets.push(Target::new(provider, model_pattern, self.health));
                }
            } else {
                for model in provider.spec.models.iter().filter(|m| model_glob.matches(&m.id)) {
                    targets.push(Target::new(provider, &model.id, self.health));
                }
            }
        }
        if targets.is_empty() {
            return Err(format!("{name:?} matches no model in the provider catalogs"));
        }
        Ok(targets)
    }

    fn actions(&mut self, file: &DataFile, rule: &RuleFile, base: &Actions, all: &AliasFiles) -> Option<Actions> {
        let before = self.problems.len();
        let mut stack = Vec::new();
        let route = match &rule.targets {
            Some(entries) => self.route(file, entries, rule.strategy, rule.weights.as_ref(), all, &mut stack),
            None => None,
        };
        if rule.targets.is_none() && rule.weights.is_some() {
            self.problems.push(file_problem(file, 0..0, "`weights` go with `targets`".into()));
        }
        let reject = rule.reject.as_ref().and_then(|reject| {
            let status = reject.get_ref().status;
            if (400..=599).contains(&status) {
                Some(Reject { status, message: reject.get_ref().message.clone() })
            } else {
                self.problems.push(file_problem(file, reject.span(), format!("reject status {status} is not 4xx/5xx")));
                None
            }
        });
        let downgrade = rule.downgrade.as_ref().and_then(|downgrade| {
            let spec = downgrade.get_ref();
            if !(0.0..=100.0).contains(&spec.budget_spent_percent) {
                self.problems.push(file_problem(
                    file,
                    downgrade.span(),
                    "`budget_spent_percent` is between 0 and 100".into(),
                ));
                return None;
            }
            let route = self.route(file, &spec.to, None, None, all, &mut stack)?;
            Some(Downgrade { spent_fraction: spec.budget_spent_percent / 100.0, route })
        });
        let ms = |value: Option<u64>| value.map(Duration::from_millis);
        let attempts = AttemptSettings {
            retries: rule.retries.unwrap_or(base.attempts.retries),
            backoff: ms(rule.backoff_ms).unwrap_or(base.attempts.backoff),
            max_backoff: ms(rule.max_backoff_ms).unwrap_or(base.attempts.max_backoff),
            deadline: ms(rule.deadline_ms).or(base.attempts.deadline),
            first_byte_timeout: ms(rule.first_byte_timeout_ms).or(base.attempts.first_byte_timeout),
            total_timeout: ms(rule.total_timeout_ms).or(base.attempts.total_timeout),
        };
        if self.problems.len() > before {
            return None;
        }
        // A rule inherits only the default's settings; its route, privacy, rejection and
        // downgrade are its own.
        Some(Actions {
            route,
            strategy: if rule.targets.is_none() { rule.strategy } else { None },
            privacy: rule.privacy,
            reject,
            max_tokens: rule.max_tokens.or(base.max_tokens),
            expected_output_tokens: rule.expected_output_tokens.unwrap_or(base.expected_output_tokens),
            attempts,
            downgrade,
        })
    }
}
