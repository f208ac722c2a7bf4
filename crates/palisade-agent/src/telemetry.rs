//! Telemetry sources: a simulator producing plausible values for declared fields
//! (`--simulate`, `--simulate-fields temperature:number,humidity:number`), or a local
//! command whose standard output is one JSON object per line (`--telemetry-command`).
//!
//! A source sends JSON objects into a bounded channel; the run loop appends them to the
//! durable queue. A command that exits is started again after the interval, so both a
//! one-shot reader (`cat /sys/…`) and a long-running streamer work.

use crate::{Error, Result};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch};

/// The type of a simulated field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Number,
    Integer,
    Boolean,
}

/// A field the simulator produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: FieldType,
}

/// Parse `name:type,name:type` (types: number, integer, boolean).
pub fn parse_fields(spec: &str) -> Result<Vec<Field>> {
    let mut fields = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, kind) = part.split_once(':').unwrap_or((part, "number"));
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(Error::invalid(
                "simulated field",
                format!("{name:?}: names are 1-64 characters from [A-Za-z0-9_.-]"),
            ));
        }
        let kind = match kind.trim() {
            "number" => FieldType::Number,
            "integer" => FieldType::Integer,
            "boolean" | "bool" => FieldType::Boolean,
            other => {
                return Err(Error::invalid(
                    "simulated field",
                    format!("{name}: unknown type {other:?} (number, integer, boolean)"),
                ));
            }
        };
        if fields.iter().any(|f: &Field| f.name == name) {
            return Err(Error::invalid(
                "simulated field",
                format!("{name} given twice"),
            ));
        }
        fields.push(Field {
            name: name.to_owned(),
            kind,
        });
    }
    if fields.is_empty() {
        return Err(Error::invalid("simulated fields", "none given"));
    }
    Ok(fields)
}

/// Where telemetry comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// No telemetry (the agent only drains its queue and handles commands).
    None,
    Simulate {
        fields: Vec<Field>,
        interval: Duration,
    },
    Command {
        command: String,
        interval: Duration,
        max_line: usize,
    },
}

/// A uniformly random f64 in [0, 1) from the OS CSPRNG.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A random walk per field, within plausible bounds.
#[derive(Debug, Clone)]
pub struct Simulator {
    fields: Vec<Field>,
    values: Vec<f64>,
}

impl Simulator {
    pub fn new(fields: Vec<Field>) -> Self {
        let values = fields
            .iter()
            .map(|f| {
                let (lo, hi) = Self::range(f);
                let start = match f.name.as_str() {
                    "temperature" => 21.0,
                    "humidity" => 45.0,
                    _ => (lo + hi) / 2.0,
                };
                start + (unit_random() - 0.5) * (hi - lo) * 0.05
            })
            .collect();
        Self { fields, values }
    }

    fn range(field: &Field) -> (f64, f64) {
        match (field.name.as_str(), field.kind) {
            ("temperature", _) => (-10.0, 45.0),
            ("humidity", _) => (5.0, 95.0),
            (_, FieldType::Integer) => (0.0, 1000.0),
            _ => (0.0, 100.0),
        }
    }

    /// The next sample: one JSON object with every field.
    pub fn sample(&mut self) -> Map<String, Value> {
        let mut out = Map::new();
        for (field, value) in self.fields.iter().zip(self.values.iter_mut()) {
            let (lo, hi) = Self::range(field);
            let step = (hi - lo) * 0.01;
            *value = (*value + (unit_random() - 0.5) * 2.0 * step).clamp(lo, hi);
            let json = match field.kind {
                FieldType::Number => serde_json::Number::from_f64((*value * 10.0).round() / 10.0)
                    .map_or(Value::Null, Value::Number),
                FieldType::Integer => Value::from(value.round() as i64),
                FieldType::Boolean => Value::Bool(unit_random() < 0.5),
            };
            out.insert(field.name.clone(), json);
        }
        out
    }
}

/// Run a source until shutdown, sending each sample to `tx`.
pub async fn produce(
    source: Source,
    tx: mpsc::Sender<Map<String, Value>>,
    mut shutdown: watch::Receiver<bool>,
) {
    match source {
        Source::None => {}
        Source::Simulate { fields, interval } => {
            let mut sim = Simulator::new(fields);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        if tx.send(sim.sample()).await.is_err() {
                            return;
                        }
                    }
                    () = crate::stopped(&mut shutdown) => return,
                }
            }
        }
        Source::Command {
            command,
            interval,
            max_line,
        } => loop {
            tokio::select! {
                () = run_command_once(&command, max_line, &tx) => {}
                () = crate::stopped(&mut shutdown) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = crate::stopped(&mut shutdown) => return,
            }
        },
    }
}

/// Start `sh -c command` and forward each line of its output that is a JSON object.
async fn run_command_once(command: &str, max_line: usize, tx: &mpsc::Sender<Map<String, Value>>) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        // Its own process group, so that stopping the agent stops the whole pipeline.
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot start the telemetry command: {e}");
            return;
        }
    };
    let mut group = GroupGuard(child.id());
    let Some(stdout) = child.stdout.take() else {
        return;
    };
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded read: at most max_line + 1 bytes per line.
        let limit = u64::try_from(max_line)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("reading the telemetry command's output failed: {e}");
                break;
            }
        };
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && line.len() > max_line {
            tracing::warn!("telemetry line longer than {max_line} bytes: skipped");
            // Discard the rest of the over-long line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                match (&mut reader).take(limit).read_until(b'\n', &mut rest).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(object)) => {
                if tx.send(object).await.is_err() {
                    break;
                }
            }
            Ok(_) => tracing::warn!("telemetry line is not a JSON object: skipped"),
            Err(e) => tracing::warn!("telemetry line is not JSON ({e}): skipped"),
        }
    }
    let waited = child.wait().await;
    // Reaped: the group id may be reused from now on, so never signal it again.
    group.0 = None;
    match waited {
        Ok(status) if !status.success() => {
            tracing::warn!("the telemetry command exited with {status}");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("waiting for the telemetry command failed: {e}"),
    }
}

/// While set, dropping it (the source being cancelled at shutdown) sends SIGTERM to the
/// telemetry command's process group. The leader has not been reaped then, so the
/// group id cannot belong to anyone else.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_bad_specs_are_refused() {
        let fields = parse_fields("temperature:number, humidity:number,door:boolean,count:integer")
            .expect("valid");
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[2].kind, FieldType::Boolean);
        for bad in ["", "a:float", "a/b:number", "a:number,a:number"] {
            assert!(parse_fields(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn simulated_values_are_plausible() {
        let mut sim =
            Simulator::new(parse_fields("temperature:number,humidity:number").expect("f"));
        for _ in 0..1000 {
            let s = sim.sample();
            let t = s["temperature"].as_f64().expect("number");
            let h = s["humidity"].as_f64().expect("number");
            assert!((-10.0..=45.0).contains(&t), "temperature {t}");
            assert!((5.0..=95.0).contains(&h), "humidity {h}");
            assert_eq!(s.len(), 2);
        }
    }

    #[tokio::test]
    async fn command_lines_that_are_json_objects_become_samples() {
        let (tx, mut rx) = mpsc::channel(16);
        let long = "x".repeat(100);
        let cmd = format!(
            "printf '%s\\n' '{{\"a\":1}}' 'not json' '[1]' '{{\"b\":\"{long}\"}}' '' '{{\"c\":true}}'"
        );
        run_command_once(&cmd, 64, &tx).await;
        drop(tx);
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(Value::Object(v));
        }
        assert_eq!(
            got,
            vec![serde_json::json!({"a":1}), serde_json::json!({"c":true})]
        );
    }
}
