//! Agent-controlled text (tool, action, resource, parameters, and the
//! names in a policy) shown in a chat as literal text: an agent must not
//! be able to start new lines, print bold "fields", links or mentions in
//! the approver's message.

/// Control characters and invisible formatting (zero-width, bidi
/// overrides) written out as `\n`, `\u{202e}`: no new lines, nothing that
/// reorders or hides what follows.
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// Slack mrkdwn: the value as an inline code span, in which Slack formats
/// nothing (`*`, `_`, `~`, `:emoji:`); `&`, `<`, `>` as entities (no links
/// or mentions), backticks replaced (they would close the span), no raw
/// new lines. At most `max` characters, the closing backtick included.
pub fn slack_code(s: &str, max: usize) -> String {
    let mut out = String::from("`");
    let budget = max.saturating_sub(2);
    let mut used = 0;
    let text = literal(s);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let piece: &str = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '`' => "ˋ",
            _ => "",
        };
        let n = if piece.is_empty() {
            1
        } else {
            piece.chars().count()
        };
        // Leave room for `…` if more follows.
        let room = if chars.peek().is_some() {
            budget.saturating_sub(1)
        } else {
            budget
        };
        if used + n > room {
            out.push('…');
            break;
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
        used += n;
    }
    if used == 0 && !out.ends_with('…') {
        // An empty span is shown as two backticks; say so instead.
        out.push(' ');
    }
    out.push('`');
    out
}

/// Slack mrkdwn outside a code span (names the operator wrote): entities
/// for `&<>`, the formatting characters replaced by look-alikes that
/// format nothing.
pub fn slack_plain(s: &str) -> String {
    literal(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('*', "∗")
        .replace('_', "ˍ")
        .replace('~', "˜")
        .replace('`', "ˋ")
}

/// Markdown as Teams renders it in Adaptive Cards: every metacharacter
/// backslash-escaped, no raw new lines.
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in literal(s).chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '{'
                | '}'
                | '['
                | ']'
                | '('
                | ')'
                | '#'
                | '+'
                | '-'
                | '.'
                | '!'
                | '|'
                | '~'
                | '<'
                | '>'
                | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACK: &str =
        "acct_1`.\n\n*Parameters*\namount: 5 USD\n[Approve](https://evil.example/a) <!channel> `x";

    #[test]
    fn slack_code_spans_hold_everything() {
        let s = slack_code(ATTACK, 3000);
        assert!(s.starts_with('`') && s.ends_with('`'));
        let inner = &s[1..s.len() - 1];
        assert!(!inner.contains('`') && !inner.contains('\n'), "{s}");
        assert!(!inner.contains('<') && !inner.contains('>'), "{s}");
        assert!(inner.contains("\\n\\n*Parameters*"), "{s}");
        assert!(inner.contains("&lt;!channel&gt;"), "{s}");
        let cut = slack_code(&"&".repeat(100), 20);
        assert!(cut.chars().count() <= 20 && cut.ends_with("…`"), "{cut}");
        assert_eq!(slack_code("", 10), "` `");
        assert_eq!(slack_code("a\u{202e}b", 20), "`a\\u{202e}b`");
    }

    #[test]
    fn markdown_metacharacters_are_escaped() {
        let m = markdown(ATTACK);
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains("\\[Approve\\]\\(https\\:"), "{m}");
        assert!(m.contains("\\*Parameters\\*"), "{m}");
        assert_eq!(slack_plain("a*b_c\nd<e>"), "a∗bˍc\\nd&lt;e&gt;");
    }
}
