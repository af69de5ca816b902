//! Output for a 115200-baud serial console: plain lines, at most 80 columns, no colour, no
//! cursor movement. A label column of fixed width keeps every screen aligned.

/// Widest line printed.
pub const WIDTH: usize = 80;
/// Width of the label column (`slot A`, `update`, ...).
pub const LABEL: usize = 10;

/// One `label  value` line, the value wrapped under itself when longer than the screen.
#[must_use]
pub fn row(label: &str, value: &str) -> String {
    row_in(LABEL, label, value)
}

/// [`row`] with a label column of `label_width`.
#[must_use]
pub fn row_in(label_width: usize, label: &str, value: &str) -> String {
    let indent = label_width + 2;
    let lines = wrap(value, WIDTH - indent);
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("{label:<label_width$}  {line}"));
        } else {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
    }
    if lines.is_empty() {
        out.push_str(label);
    }
    out.trim_end().to_owned()
}

/// Splits `text` into lines of at most `width` characters at spaces; a word longer than the
/// line is cut. A line that fits is kept as it is (column padding survives). Never returns an
/// empty list for non-empty text.
#[must_use]
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let paragraph = paragraph.trim_end();
        if paragraph.chars().count() <= width {
            if !paragraph.is_empty() {
                lines.push(paragraph.to_owned());
            }
            continue;
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word: String = word.to_owned();
            while word.chars().count() > width {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                lines.push(head);
            }
            let needed = if line.is_empty() {
                word.chars().count()
            } else {
                line.chars().count() + 1 + word.chars().count()
            };
            if needed > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

/// Bytes as a short human figure: `812 KiB`, `3.4 GiB`.
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // a display figure: three digits are enough
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_align_and_never_pass_80_columns() {
        let long = "rauc refused it: Bundle rejected: Hook returned: compatible mismatch: bundle is 'fleet-some-other-station', station is 'fleet-test-host'";
        let text = row("install", long);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(text.starts_with("install     rauc refused"), "{text}");
        assert!(
            text.lines().skip(1).all(|l| l.starts_with(&" ".repeat(12))),
            "{text}"
        );
        assert_eq!(row("slot A", "good"), "slot A      good");
        assert_eq!(row("slot B", "bad    1.0.0"), "slot B      bad    1.0.0");
        assert_eq!(row_in(4, "42%", "Copying"), "42%   Copying");
    }

    #[test]
    fn words_longer_than_a_line_are_cut() {
        let lines = wrap(&"x".repeat(30), 10);
        assert_eq!(lines, vec!["x".repeat(10), "x".repeat(10), "x".repeat(10)]);
        assert!(wrap("", 10).is_empty());
    }

    #[test]
    fn byte_counts_read_short() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(bytes(20 * 1024 * 1024 * 1024), "20 GiB");
    }
}
