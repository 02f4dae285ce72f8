//! `--log-format json`: one JSON object per line, for log shippers —
//!
//! ```json
//! {"timestamp":"2026-01-02T12:41:05.123Z","level":"info","target":"keyfed::engine::target",
//!  "message":"refreshed","fields":{"target":"aws","took_ms":84},
//!  "spans":[{"name":"refresh","target":"aws"}]}
//! ```
//!
//! `timestamp` is RFC 3339 in UTC with milliseconds (also under the journal: every object has
//! the same keys, whoever reads it); `level` is one of the words `--log-level` takes; `target` is
//! the module that logged; `fields` holds the event's fields as JSON values (numbers and
//! booleans as such, anything else as its text); `spans` the spans it happened in, outermost
//! first, each its `name` and fields. Both are present, perhaps empty, in every object. A string
//! longer than 8 KiB as written is cut there, ending `…[N bytes cut]`.
//!
//! `serde_json` escapes every control character below U+0020 (newline and NUL, where journald
//! ends a line, among them), `"` and `\`: an object is one line as written, and `line.rs` adds
//! only the priority prefix. It writes DEL (U+007F) as is, which JSON allows.

use std::sync::Arc;

use keyfed_core::clock::{Clock, rfc3339_millis};
use keyfed_core::http::error_chain;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::line::{MAX_TEXT, cut_marker};

/// The word for `level` (as `--log-level` takes it).
fn level_word(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// One event, as written.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    timestamp: String,
    level: &'static str,
    target: &'a str,
    message: &'a str,
    fields: &'a Map<String, Value>,
    spans: Vec<Map<String, Value>>,
}

/// Formats events as JSON objects; spans' fields must be formatted by [`JsonFields`].
pub(super) struct JsonEvent {
    clock: Arc<dyn Clock>,
}

impl JsonEvent {
    pub(super) fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

impl<S, N> FormatEvent<S, N> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope()
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let extensions = span.extensions();
                        let mut object = extensions
                            .get::<FormattedFields<N>>()
                            .and_then(|f| {
                                serde_json::from_str::<Map<String, Value>>(&f.fields).ok()
                            })
                            .unwrap_or_default();
                        object.insert("name".into(), span.name().into());
                        object
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line = EventLine {
            timestamp: rfc3339_millis(self.clock.now()),
            level: level_word(event.metadata().level()),
            // An event of the `log` crate names its real target in a field.
            target: fields
                .log_target
                .as_deref()
                .unwrap_or(event.metadata().target()),
            message: fields.message.as_deref().unwrap_or_default(),
            fields: &fields.map,
            spans,
        };
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Formats spans' fields as a JSON object, for [`JsonEvent`] to read back.
pub(super) struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = Fields::default();
        fields.record(&mut visitor);
        write!(writer, "{}", Value::Object(visitor.into_map()))
    }

    /// Values recorded later replace those of the same name.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> std::fmt::Result {
        let mut visitor = Fields {
            map: serde_json::from_str(&current.fields).unwrap_or_default(),
            ..Fields::default()
        };
        fields.record(&mut visitor);
        current.fields = Value::Object(visitor.into_map()).to_string();
        Ok(())
    }
}

/// An event's or span's fields as JSON values; the message and the `log` crate's metadata
/// apart.
#[derive(Default)]
pub(super) struct Fields {
    pub map: Map<String, Value>,
    pub message: Option<String>,
    pub log_target: Option<String>,
}

impl Fields {
    /// All fields, the message (if any) among them.
    fn into_map(mut self) -> Map<String, Value> {
        if let Some(message) = self.message {
            self.map.insert("message".into(), message.into());
        }
        self.map
    }

    fn put(&mut self, field: &Field, value: Value) {
        let value = match value {
            Value::String(s) => Value::String(cut(s)),
            other => other,
        };
        let text = |value: Value| match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        match field.name() {
            "message" => self.message = Some(text(value)),
            "log.target" => self.log_target = Some(text(value)),
            // The rest of the `log` crate's metadata (module path, file, line).
            name if name.starts_with("log.") => {}
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.map.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value = i64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value = u64::try_from(value).map_or_else(|_| value.to_string().into(), Value::from);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, error_chain(value).into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// `text` cut to [`MAX_TEXT`] bytes as JSON writes it (escapes included), with the marker of
/// text lines: a line journald splits could start a piece with a forged priority (`line.rs`).
/// Each string (the message, every field's value) is cut on its own, so the object stays whole.
fn cut(mut text: String) -> String {
    let mut written = 0;
    let at = text.char_indices().find_map(|(at, c)| {
        written += escaped_len(c);
        (written > MAX_TEXT).then_some(at)
    });
    if let Some(at) = at {
        let marker = cut_marker(text.len() - at);
        text.truncate(at);
        text.push_str(&marker);
    }
    text
}

/// How many bytes `c` takes inside a JSON string as `serde_json` writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        '\0'..='\x1f' => 6,
        c => c.len_utf8(),
    }
}
