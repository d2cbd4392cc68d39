//! The `voxplane` TOML configuration file.
//!
//! Every key is optional: a missing key takes its default ([`DEFAULT_TOML`]
//! spells out all of them and `docs/config.md` documents each). Unknown
//! keys, wrong types and out-of-range values are errors whose `Display`
//! names the file, the 1-based line and column, and the dotted key path:
//!
//! ```text
//! voxplane.toml:7:17: analyze.interval_secs: expected an integer, found a string
//! ```
//!
//! The file is walked with `toml_edit`, which keeps the position of every
//! key and value, against a fixed schema; the schema and the error messages
//! are ours rather than serde's, so they can be exact.
#![cfg_attr(
    not(test),
    expect(dead_code, reason = "the integrator wires the CLI to this module")
)]

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, TableLike, Value};
use wire::PayloadType;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `[analyze]`: offline and live voice-quality analysis.
    pub analyze: AnalyzeConfig,
    /// `[demo]`: the synthetic demo capture.
    pub demo: DemoConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

/// `[analyze]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalyzeConfig {
    /// `format`: output format of `voxplane analyze`.
    pub format: OutputFormat,
    /// `jitter_buffer`: the jitter buffers the MOS estimate is computed for.
    pub jitter_buffer: JitterBufferConfig,
    /// `interval_secs`: length of one reporting interval (s, ≥ 1).
    pub interval_secs: u64,
    /// `codec_overrides`: codec name for dynamic (or re-used) payload types
    /// whose SDP was not captured, e.g. `{ "96" = "opus" }`.
    pub codec_overrides: BTreeMap<PayloadType, String>,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        Self {
            format: OutputFormat::Table,
            jitter_buffer: JitterBufferConfig::default(),
            interval_secs: 10,
            codec_overrides: BTreeMap::new(),
        }
    }
}

/// Output format of `voxplane analyze`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned text table for terminals.
    Table,
    /// One JSON document.
    Json,
    /// CSV with a header row.
    Csv,
}

/// `[analyze.jitter_buffer]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitterBufferConfig {
    /// `fixed_ms`: depths of the two fixed jitter buffers (F1, F2) the MOS
    /// estimate is computed for (ms, each 1–10,000).
    pub fixed_ms: [u32; 2],
    /// `adaptive_max_ms`: ceiling of the adaptive jitter buffer (ms, 1–10,000).
    pub adaptive_max_ms: u32,
}

impl Default for JitterBufferConfig {
    fn default() -> Self {
        Self {
            fixed_ms: [50, 200],
            adaptive_max_ms: 500,
        }
    }
}

/// `[demo]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoConfig {
    /// `calls`: number of synthetic calls (≥ 1).
    pub calls: u32,
    /// `seed`: seed of the synthetic capture (0 – 2⁶³−1, TOML integers are
    /// signed 64-bit).
    pub seed: u64,
    /// `loss`: loss model preset of every leg.
    pub loss: DemoLoss,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            calls: 6,
            seed: 1,
            loss: DemoLoss::Lossy,
        }
    }
}

/// Loss presets of the demo capture (see `bench::synth::LossPreset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoLoss {
    /// No loss.
    Clean,
    /// Independent random loss, 1–3 % per leg.
    Lossy,
    /// Gilbert–Elliott bursts, ≈ 3 % overall.
    Bursty,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `level`: the most verbose level logged.
    pub level: LogLevel,
}

/// A log level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Informational messages and above.
    #[default]
    Info,
    /// Debugging detail and above.
    Debug,
    /// Everything.
    Trace,
}

/// The defaults, as a configuration file. `Config::default()` equals this
/// file parsed, and `docs/config.md` quotes it.
pub const DEFAULT_TOML: &str = r#"[analyze]
format = "table"
interval_secs = 10
jitter_buffer = { fixed_ms = [50, 200], adaptive_max_ms = 500 }
codec_overrides = {}

[demo]
calls = 6
seed = 1
loss = "lossy"

[log]
level = "info"
"#;

impl Config {
    /// Reads and parses the configuration file at `path`. Errors name the
    /// file as given.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read, else as
    /// [`Config::from_str`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str(&text, &path.display().to_string())
    }

    /// [`Config::load`] if a path is given, else the defaults.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    /// Parses configuration text; `origin` names it in errors (a file name).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Syntax`] for invalid TOML, [`ConfigError::UnknownKey`],
    /// [`ConfigError::WrongType`] or [`ConfigError::InvalidValue`] for
    /// valid TOML that does not fit the schema. The first error found (in
    /// document order within each table) is returned.
    pub fn from_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let doc = ImDocument::parse(text).map_err(|e| ConfigError::Syntax {
            at: Location::of(text, origin, e.span()),
            message: e.message().trim().replace('\n', "; "),
        })?;
        let w = Walker { text, origin };
        let root = doc.as_table();
        w.check_keys(root, "", &["analyze", "demo", "log"])?;
        let mut config = Config::default();
        if let Some((_, item)) = root.get_key_value("analyze") {
            config.analyze = w.analyze(item)?;
        }
        if let Some((_, item)) = root.get_key_value("demo") {
            config.demo = w.demo(item)?;
        }
        if let Some((_, item)) = root.get_key_value("log") {
            let t = w.table(item, "log")?;
            w.check_keys(t, "log", &["level"])?;
            if let Some(item) = t.get("level") {
                config.log.level = w.choice(
                    item,
                    "log.level",
                    &[
                        ("error", LogLevel::Error),
                        ("warn", LogLevel::Warn),
                        ("info", LogLevel::Info),
                        ("debug", LogLevel::Debug),
                        ("trace", LogLevel::Trace),
                    ],
                )?;
            }
        }
        Ok(config)
    }
}

/// A position in a configuration file: origin name, 1-based line and column
/// (in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file name (or other origin) as given.
    pub origin: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.origin, self.line, self.column)
    }
}

/// Why a configuration could not be loaded (a local/config error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read configuration: {source}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{at}: invalid TOML: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// The parser's message.
        message: String,
    },
    /// A key the schema does not know.
    #[error("{at}: {key}: unknown key (expected one of: {})", expected.join(", "))]
    UnknownKey {
        /// Where the key is.
        at: Location,
        /// Its dotted path.
        key: String,
        /// The keys allowed in its table.
        expected: Vec<&'static str>,
    },
    /// A value of the wrong TOML type.
    #[error("{at}: {key}: expected {expected}, found {found}")]
    WrongType {
        /// Where the value is.
        at: Location,
        /// Its dotted path.
        key: String,
        /// The type the schema wants ("an integer").
        expected: &'static str,
        /// The type found ("a string").
        found: &'static str,
    },
    /// A value of the right type but out of range or not among the choices.
    #[error("{at}: {key}: {reason}")]
    InvalidValue {
        /// Where the value is.
        at: Location,
        /// Its dotted path.
        key: String,
        /// What is wrong, with the value found.
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

impl Location {
    /// The location of byte offset `span.start` in `text` (1:1 if unknown).
    fn of(text: &str, origin: &str, span: Option<Range<usize>>) -> Self {
        let offset = span.map_or(0, |s| s.start).min(text.len());
        // Back off to a char boundary in case a span ends mid-character.
        let mut offset = offset;
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            origin: origin.to_owned(),
            line,
            column,
        }
    }
}

struct Walker<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Walker<'_> {
    fn at(&self, span: Option<Range<usize>>) -> Location {
        Location::of(self.text, self.origin, span)
    }

    fn analyze(&self, item: &Item) -> Result<AnalyzeConfig, ConfigError> {
        let t = self.table(item, "analyze")?;
        self.check_keys(
            t,
            "analyze",
            &[
                "format",
                "jitter_buffer",
                "interval_secs",
                "codec_overrides",
            ],
        )?;
        let mut a = AnalyzeConfig::default();
        if let Some(item) = t.get("format") {
            a.format = self.choice(
                item,
                "analyze.format",
                &[
                    ("table", OutputFormat::Table),
                    ("json", OutputFormat::Json),
                    ("csv", OutputFormat::Csv),
                ],
            )?;
        }
        if let Some(item) = t.get("interval_secs") {
            a.interval_secs = self.int(item, "analyze.interval_secs", 1, i64::MAX)? as u64;
        }
        if let Some(item) = t.get("jitter_buffer") {
            let path = "analyze.jitter_buffer";
            let jb = self.table(item, path)?;
            self.check_keys(jb, path, &["fixed_ms", "adaptive_max_ms"])?;
            if let Some(item) = jb.get("fixed_ms") {
                let key = "analyze.jitter_buffer.fixed_ms";
                let arr = item
                    .as_array()
                    .ok_or_else(|| self.wrong_type(item, key, "an array of integers"))?;
                if arr.len() != 2 {
                    return Err(ConfigError::InvalidValue {
                        at: self.at(item.span()),
                        key: key.to_owned(),
                        reason: format!("expected exactly 2 depths (F1, F2), found {}", arr.len()),
                    });
                }
                for (i, v) in arr.iter().enumerate() {
                    let key = format!("{key}[{i}]");
                    a.jitter_buffer.fixed_ms[i] = self.int_value(v, &key, 1, 10_000)? as u32;
                }
            }
            if let Some(item) = jb.get("adaptive_max_ms") {
                a.jitter_buffer.adaptive_max_ms =
                    self.int(item, "analyze.jitter_buffer.adaptive_max_ms", 1, 10_000)? as u32;
            }
        }
        if let Some(item) = t.get("codec_overrides") {
            let path = "analyze.codec_overrides";
            let co = self.table(item, path)?;
            for (name, value) in co.iter() {
                let key_span = co.get_key_value(name).and_then(|(k, _)| k.span());
                let key = format!("{path}.{name}");
                let pt = name
                    .parse::<u8>()
                    .ok()
                    .filter(|pt| *pt <= 127)
                    .ok_or_else(|| ConfigError::InvalidValue {
                        at: self.at(key_span.clone()),
                        key: key.clone(),
                        reason: format!("keys must be RTP payload types 0-127, found {name:?}"),
                    })?;
                let codec = self.string(value, &key)?;
                if codec.trim().is_empty() {
                    return Err(ConfigError::InvalidValue {
                        at: self.at(value.span()),
                        key,
                        reason: "expected a codec name, found an empty string".into(),
                    });
                }
                a.codec_overrides.insert(PayloadType(pt), codec.to_owned());
            }
        }
        Ok(a)
    }

    fn demo(&self, item: &Item) -> Result<DemoConfig, ConfigError> {
        let t = self.table(item, "demo")?;
        self.check_keys(t, "demo", &["calls", "seed", "loss"])?;
        let mut d = DemoConfig::default();
        if let Some(item) = t.get("calls") {
            d.calls = self.int(item, "demo.calls", 1, i64::from(u32::MAX))? as u32;
        }
        if let Some(item) = t.get("seed") {
            d.seed = self.int(item, "demo.seed", 0, i64::MAX)? as u64;
        }
        if let Some(item) = t.get("loss") {
            d.loss = self.choice(
                item,
                "demo.loss",
                &[
                    ("clean", DemoLoss::Clean),
                    ("lossy", DemoLoss::Lossy),
                    ("bursty", DemoLoss::Bursty),
                ],
            )?;
        }
        Ok(d)
    }

    /// Rejects keys of `table` not in `allowed`, at the key's position.
    fn check_keys(
        &self,
        table: &dyn TableLike,
        path: &str,
        allowed: &[&'static str],
    ) -> Result<(), ConfigError> {
        for (name, _) in table.iter() {
            if !allowed.contains(&name) {
                let span = table.get_key_value(name).and_then(|(k, _)| k.span());
                return Err(ConfigError::UnknownKey {
                    at: self.at(span),
                    key: join(path, name),
                    expected: allowed.to_vec(),
                });
            }
        }
        Ok(())
    }

    fn table<'i>(&self, item: &'i Item, key: &str) -> Result<&'i dyn TableLike, ConfigError> {
        item.as_table_like()
            .ok_or_else(|| self.wrong_type(item, key, "a table"))
    }

    fn string<'i>(&self, item: &'i Item, key: &str) -> Result<&'i str, ConfigError> {
        item.as_str()
            .ok_or_else(|| self.wrong_type(item, key, "a string"))
    }

    fn int(&self, item: &Item, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        match item.as_value() {
            Some(v) => self.int_value(v, key, min, max),
            None => Err(self.wrong_type(item, key, "an integer")),
        }
    }

    fn int_value(&self, v: &Value, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let Some(n) = v.as_integer() else {
            return Err(ConfigError::WrongType {
                at: self.at(v.span()),
                key: key.to_owned(),
                expected: "an integer",
                found: value_kind(v),
            });
        };
        if n < min || n > max {
            let reason = if max == i64::MAX {
                format!("must be at least {min}, found {n}")
            } else {
                format!("must be between {min} and {max}, found {n}")
            };
            return Err(ConfigError::InvalidValue {
                at: self.at(v.span()),
                key: key.to_owned(),
                reason,
            });
        }
        Ok(n)
    }

    fn choice<T: Copy>(
        &self,
        item: &Item,
        key: &str,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let s = self.string(item, key)?;
        choices
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                ConfigError::InvalidValue {
                    at: self.at(item.span()),
                    key: key.to_owned(),
                    reason: format!("expected one of {}, found {s:?}", names.join(", ")),
                }
            })
    }

    fn wrong_type(&self, item: &Item, key: &str, expected: &'static str) -> ConfigError {
        ConfigError::WrongType {
            at: self.at(item.span()),
            key: key.to_owned(),
            expected,
            found: item_kind(item),
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn item_kind(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_kind(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_str(text, "voxplane.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            Config::from_str("", "voxplane.toml").unwrap(),
            Config::default()
        );
        assert_eq!(Config::load_or_default(None).unwrap(), Config::default());
    }

    #[test]
    fn embedded_defaults_match_and_are_documented() {
        assert_eq!(
            Config::from_str(DEFAULT_TOML, "defaults").unwrap(),
            Config::default()
        );
        let docs = include_str!("../docs/config.md");
        assert!(
            docs.contains(DEFAULT_TOML),
            "docs/config.md must quote DEFAULT_TOML verbatim"
        );
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
# A complete file.
[analyze]
format = "json"
interval_secs = 30
codec_overrides = { "96" = "opus", "97" = "AMR-WB" }

[analyze.jitter_buffer]
fixed_ms = [20, 60]
adaptive_max_ms = 300

[demo]
calls = 5
seed = 42
loss = "bursty"

[log]
level = "debug"
"#;
        let c = Config::from_str(text, "voxplane.toml").unwrap();
        assert_eq!(c.analyze.format, OutputFormat::Json);
        assert_eq!(c.analyze.interval_secs, 30);
        assert_eq!(c.analyze.jitter_buffer.fixed_ms, [20, 60]);
        assert_eq!(c.analyze.jitter_buffer.adaptive_max_ms, 300);
        assert_eq!(
            c.analyze
                .codec_overrides
                .get(&PayloadType(96))
                .map(String::as_str),
            Some("opus")
        );
        assert_eq!(c.analyze.codec_overrides.len(), 2);
        assert_eq!(
            c.demo,
            DemoConfig {
                calls: 5,
                seed: 42,
                loss: DemoLoss::Bursty
            }
        );
        assert_eq!(c.log.level, LogLevel::Debug);
    }

    #[test]
    fn partial_section_keeps_other_defaults() {
        let c = Config::from_str("[analyze]\nformat = \"csv\"\n", "x.toml").unwrap();
        assert_eq!(c.analyze.format, OutputFormat::Csv);
        assert_eq!(c.analyze.interval_secs, 10);
        assert_eq!(c.demo, DemoConfig::default());
        let c = Config::from_str("analyze.jitter_buffer.adaptive_max_ms = 80\n", "x").unwrap();
        assert_eq!(c.analyze.jitter_buffer.adaptive_max_ms, 80);
        assert_eq!(c.analyze.jitter_buffer.fixed_ms, [50, 200]);
    }

    #[test]
    fn wrong_type_names_file_line_column_key() {
        let text =
            "[log]\nlevel = \"info\"\n\n[analyze]\nformat = \"json\"\n\ninterval_secs = \"10\"\n";
        assert_eq!(
            err(text),
            "voxplane.toml:7:17: analyze.interval_secs: expected an integer, found a string"
        );
        assert_eq!(
            err("[demo]\ncalls = 1.5\n"),
            "voxplane.toml:2:9: demo.calls: expected an integer, found a float"
        );
        assert_eq!(
            err("log = \"debug\"\n"),
            "voxplane.toml:1:7: log: expected a table, found a string"
        );
        assert_eq!(
            err("[analyze]\njitter_buffer = { fixed_ms = [50, \"x\"] }\n"),
            "voxplane.toml:2:35: analyze.jitter_buffer.fixed_ms[1]: expected an integer, found a string"
        );
        assert_eq!(
            err("[analyze.jitter_buffer]\nfixed_ms = 50\n"),
            "voxplane.toml:2:12: analyze.jitter_buffer.fixed_ms: expected an array of integers, found an integer"
        );
        assert_eq!(
            err("[log]\nlevel = true\n"),
            "voxplane.toml:2:9: log.level: expected a string, found a boolean"
        );
    }

    #[test]
    fn fixed_jitter_buffers_are_f1_and_f2() {
        assert_eq!(
            err("[analyze.jitter_buffer]\nfixed_ms = [50]\n"),
            "voxplane.toml:2:12: analyze.jitter_buffer.fixed_ms: expected exactly 2 depths (F1, F2), found 1"
        );
        assert_eq!(
            err("[analyze.jitter_buffer]\nfixed_ms = [50, 0]\n"),
            "voxplane.toml:2:17: analyze.jitter_buffer.fixed_ms[1]: must be between 1 and 10000, found 0"
        );
    }

    #[test]
    fn unknown_keys() {
        assert_eq!(
            err("[analyze]\nformat = \"json\"\n  intervall_secs = 3\n"),
            "voxplane.toml:3:3: analyze.intervall_secs: unknown key (expected one of: \
             format, jitter_buffer, interval_secs, codec_overrides)"
        );
        assert_eq!(
            err("[relay]\nport = 1\n"),
            "voxplane.toml:1:2: relay: unknown key (expected one of: analyze, demo, log)"
        );
        assert_eq!(
            err("[analyze]\njitter_buffer = { fixed = [1] }\n"),
            "voxplane.toml:2:19: analyze.jitter_buffer.fixed: unknown key \
             (expected one of: fixed_ms, adaptive_max_ms)"
        );
    }

    #[test]
    fn invalid_values() {
        assert_eq!(
            err("[analyze]\nformat = \"xml\"\n"),
            "voxplane.toml:2:10: analyze.format: expected one of \"table\", \"json\", \"csv\", found \"xml\""
        );
        assert_eq!(
            err("[analyze]\ninterval_secs = 0\n"),
            "voxplane.toml:2:17: analyze.interval_secs: must be at least 1, found 0"
        );
        assert_eq!(
            err("[analyze.jitter_buffer]\nadaptive_max_ms = 20000\n"),
            "voxplane.toml:2:19: analyze.jitter_buffer.adaptive_max_ms: must be between 1 and 10000, found 20000"
        );
        assert_eq!(
            err("[analyze.codec_overrides]\n\"200\" = \"opus\"\n"),
            "voxplane.toml:2:1: analyze.codec_overrides.200: keys must be RTP payload types 0-127, found \"200\""
        );
        assert_eq!(
            err("[analyze.codec_overrides]\n96 = \"\"\n"),
            "voxplane.toml:2:6: analyze.codec_overrides.96: expected a codec name, found an empty string"
        );
        assert_eq!(
            err("[demo]\nseed = -1\n"),
            "voxplane.toml:2:8: demo.seed: must be at least 0, found -1"
        );
        assert_eq!(
            err("[demo]\nloss = \"heavy\"\n"),
            "voxplane.toml:2:8: demo.loss: expected one of \"clean\", \"lossy\", \"bursty\", found \"heavy\""
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "ü" is two bytes: the key after it starts at character 33, byte 34.
        assert_eq!(
            err("[analyze]\ncodec_overrides = { \"96\" = \"ü\", \"200\" = \"x\" }\n"),
            "voxplane.toml:2:33: analyze.codec_overrides.200: keys must be RTP payload types 0-127, found \"200\""
        );
        assert_eq!(
            err("[log]\n\"lévél\" = 1\n"),
            "voxplane.toml:2:1: log.lévél: unknown key (expected one of: level)"
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = Config::from_str("[analyze]\nformat = \n", "voxplane.toml").unwrap_err();
        match &e {
            ConfigError::Syntax { at, .. } => {
                assert_eq!((at.line, at.column), (2, 10));
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string()
                .starts_with("voxplane.toml:2:10: invalid TOML: "),
            "{e}"
        );
        let e = err("[demo]\nseed = 1\nseed = 2\n");
        assert!(e.starts_with("voxplane.toml:3:1: invalid TOML: "), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("voxplane.toml");
        std::fs::write(&path, "[log]\nlevel = \"loud\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2:9: log.level: expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", found \"loud\"",
                path.display()
            )
        );
        let missing = dir.path().join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().starts_with(&format!(
            "{}: cannot read configuration: ",
            missing.display()
        )));
        std::fs::write(&path, "[demo]\ncalls = 3\n").unwrap();
        assert_eq!(Config::load_or_default(Some(&path)).unwrap().demo.calls, 3);
    }
}
