//! Prometheus text exposition format 0.0.4, written by hand: a few dozen
//! lines instead of a metrics framework.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A scrape being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Prometheus' spelling of a float (`+Inf`, `0.25`, `1`).
pub fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` and `# TYPE` lines: every family is announced, with or
    /// without samples, so dashboards and alerts can rely on the names.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.write_name(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    pub fn sample_f(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.write_name(name, labels);
        let _ = writeln!(self.out, " {}", float(value));
    }

    fn write_name(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        let mut e = Exposition::new();
        e.family("x_total", "A \\ thing.", Kind::Counter);
        e.sample("x_total", &[("a", "q\"b\\c\nd")], 3);
        e.sample_f("y", &[], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP x_total A \\\\ thing.\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\c\\nd\"} 3\ny +Inf\n"
        );
        assert_eq!(float(0.00025), "0.00025");
        assert_eq!(float(1.0), "1");
    }
}
