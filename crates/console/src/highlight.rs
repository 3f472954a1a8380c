//! Syntax-aware display of source files: a small lexer per language family that marks
//! comments, strings, numbers and keywords (and YAML/JSON keys) with classes, line by line,
//! carrying block comments across lines. Everything else is escaped text.

use crate::escape_into;
use maud::PreEscaped;

/// What a file's extension (or name) says about how to read it.
#[derive(Clone, Copy)]
struct Lang {
    line_comment: &'static [&'static str],
    block: Option<(&'static str, &'static str)>,
    keywords: &'static [&'static str],
    /// `key:` at the start of a line is a key (YAML), `"key":` too (JSON).
    keys: bool,
    /// Keywords in any case (SQL, YAML's booleans).
    fold_case: bool,
}

const RUST: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "else", "enum", "false", "fn",
    "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe",
    "use", "where", "while", "dyn",
];
const PYTHON: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "False", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "None", "nonlocal", "not", "or", "pass", "raise", "return", "True", "try", "while",
    "with", "yield",
];
const C_LIKE: &[&str] = &[
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "default",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "func",
    "function",
    "go",
    "if",
    "import",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "public",
    "return",
    "static",
    "struct",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "type",
    "var",
    "void",
    "while",
    "int",
    "char",
    "long",
    "double",
    "float",
    "unsigned",
    "include",
    "defer",
    "range",
    "nil",
    "async",
    "await",
    "yield",
    "of",
    "in",
    "instanceof",
    "typeof",
];
const SHELL: &[&str] = &[
    "case", "do", "done", "elif", "else", "esac", "export", "fi", "for", "function", "if", "in",
    "local", "return", "then", "until", "while", "set", "echo", "exit",
];
const YAML: &[&str] = &["true", "false", "null", "yes", "no", "on", "off"];

fn lang_of(path: &str) -> Option<Lang> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or(name);
    let l = |line_comment, block, keywords, keys| {
        Some(Lang {
            line_comment,
            block,
            keywords,
            keys,
            fold_case: keys || ext.eq_ignore_ascii_case("sql"),
        })
    };
    match ext.to_ascii_lowercase().as_str() {
        "rs" => l(&["//"], Some(("/*", "*/")), RUST, false),
        "py" => l(&["#"], None, PYTHON, false),
        "js" | "mjs" | "ts" | "tsx" | "jsx" | "go" | "java" | "c" | "h" | "cc" | "cpp" | "hpp"
        | "cs" | "kt" | "swift" | "scala" => l(&["//"], Some(("/*", "*/")), C_LIKE, false),
        "sh" | "bash" | "zsh" | "dockerfile" => l(&["#"], None, SHELL, false),
        "yml" | "yaml" => l(&["#"], None, YAML, true),
        "json" => l(&[], None, &["true", "false", "null"], true),
        "toml" | "ini" | "cfg" | "conf" => l(&["#", ";"], None, &["true", "false"], false),
        "sql" => l(
            &["--"],
            Some(("/*", "*/")),
            &[
                "select",
                "from",
                "where",
                "insert",
                "into",
                "update",
                "delete",
                "create",
                "table",
                "index",
                "and",
                "or",
                "not",
                "null",
                "join",
                "on",
                "order",
                "by",
                "group",
                "values",
                "set",
                "primary",
                "key",
                "references",
            ],
            false,
        ),
        _ if name == "Makefile" => l(&["#"], None, SHELL, false),
        _ => None,
    }
}

fn span(out: &mut String, class: &str, text: &str) {
    out.push_str("<span class=\"");
    out.push_str(class);
    out.push_str("\">");
    escape_into(out, text);
    out.push_str("</span>");
}

/// The lines of a file as HTML, marked for its language (plain escaped text when the
/// language is unknown).
pub fn lines(path: &str, text: &str) -> Vec<PreEscaped<String>> {
    let Some(lang) = lang_of(path) else {
        return text
            .lines()
            .map(|l| {
                let mut out = String::new();
                escape_into(&mut out, l);
                PreEscaped(out)
            })
            .collect();
    };
    let mut in_block = false;
    text.lines()
        .map(|l| PreEscaped(line(&lang, l, &mut in_block)))
        .collect()
}

fn line(lang: &Lang, l: &str, in_block: &mut bool) -> String {
    let mut out = String::with_capacity(l.len() + 32);
    let mut rest = l;
    // A key at the start of a YAML line (`  name:`, `- name:`) or a JSON `"name":`.
    if lang.keys && !*in_block {
        let trimmed = rest.trim_start_matches([' ', '-']);
        let indent = &rest[..rest.len() - trimmed.len()];
        let key_end = if let Some(quoted) = trimmed.strip_prefix('"') {
            quoted
                .find('"')
                .map(|i| i + 2)
                .filter(|&i| trimmed[i..].trim_start().starts_with(':'))
        } else {
            trimmed.find(':').filter(|&i| {
                i > 0
                    && trimmed[..i]
                        .chars()
                        .all(|c| c.is_alphanumeric() || "_-.".contains(c))
            })
        };
        if let Some(end) = key_end {
            escape_into(&mut out, indent);
            span(&mut out, "hk", &trimmed[..end]);
            rest = &trimmed[end..];
        }
    }
    while !rest.is_empty() {
        if *in_block {
            let (_, close) = lang
                .block
                .expect("only languages with block comments enter one");
            match rest.find(close) {
                Some(i) => {
                    span(&mut out, "hc", &rest[..i + close.len()]);
                    rest = &rest[i + close.len()..];
                    *in_block = false;
                }
                None => {
                    span(&mut out, "hc", rest);
                    rest = "";
                }
            }
            continue;
        }
        if lang.line_comment.iter().any(|c| rest.starts_with(c)) {
            span(&mut out, "hc", rest);
            break;
        }
        if let Some((open, _)) = lang.block.filter(|(o, _)| rest.starts_with(o)) {
            span(&mut out, "hc", open);
            rest = &rest[open.len()..];
            *in_block = true;
            continue;
        }
        let first = rest.chars().next().expect("not empty");
        if first == '"' || first == '\'' || first == '`' {
            // A string to its closing quote (a backslash escapes), or to the line's end.
            let mut end = rest.len();
            let mut escaped = false;
            for (i, c) in rest.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == first {
                    end = i + c.len_utf8();
                    break;
                }
            }
            span(&mut out, "hs", &rest[..end]);
            rest = &rest[end..];
            continue;
        }
        if first.is_alphanumeric() || first == '_' {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if first.is_ascii_digit() {
                span(&mut out, "hn", word);
            } else if lang.keywords.contains(&word)
                || (lang.fold_case && lang.keywords.contains(&word.to_ascii_lowercase().as_str()))
            {
                span(&mut out, "hw", word);
            } else {
                escape_into(&mut out, word);
            }
            rest = &rest[end..];
            continue;
        }
        let len = first.len_utf8();
        escape_into(&mut out, &rest[..len]);
        rest = &rest[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(path: &str, text: &str) -> Vec<String> {
        lines(path, text).into_iter().map(|m| m.0).collect()
    }

    #[test]
    fn marks_comments_strings_numbers_and_keywords() {
        let out = html(
            "src/main.rs",
            "fn main() { let x = \"<b>\" ; // 42 <i>\n    1 /* a\n b */ mut",
        );
        assert_eq!(
            out[0],
            "<span class=\"hw\">fn</span> main() { <span class=\"hw\">let</span> x = <span class=\"hs\">&quot;&lt;b&gt;&quot;</span> ; <span class=\"hc\">// 42 &lt;i&gt;</span>"
        );
        assert_eq!(out[1], "    <span class=\"hn\">1</span> <span class=\"hc\">/*</span><span class=\"hc\"> a</span>");
        assert_eq!(
            out[2],
            "<span class=\"hc\"> b */</span> <span class=\"hw\">mut</span>"
        );
    }

    #[test]
    fn yaml_keys_and_unknown_files() {
        let out = html(
            "buildspec.yml",
            "phases:\n  build:\n    - echo \"hi\" # note",
        );
        assert_eq!(out[0], "<span class=\"hk\">phases</span>:");
        assert_eq!(out[1], "  <span class=\"hk\">build</span>:");
        assert!(
            out[2].contains("<span class=\"hs\">&quot;hi&quot;</span>")
                && out[2].contains("<span class=\"hc\"># note</span>")
        );
        assert_eq!(html("notes.txt", "<script>"), ["&lt;script&gt;"]);
        assert_eq!(
            html("q.sql", "SELECT 1"),
            ["<span class=\"hw\">SELECT</span> <span class=\"hn\">1</span>"]
        );
    }

    /// Many generated inputs from the characters the lexers branch on (a fixed LCG, so a
    /// failure repeats), each line of every language, and ANSI rendering of the same text.
    #[test]
    fn generated_input_never_panics_and_stays_escaped() {
        const ALPHABET: &[char] = &[
            '"', '\'', '`', '\\', '/', '*', '#', '-', ':', ' ', '\n', 'a', '1', '<', '>', '&', 'é',
            '\u{1b}', '[', 'm', ';', '3',
        ];
        let mut seed: u64 = 0x5eed;
        for _ in 0..3000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            let text: String = (0..len)
                .map(|i| {
                    let r = seed.rotate_left(i as u32 * 5);
                    ALPHABET[(r % ALPHABET.len() as u64) as usize]
                })
                .collect();
            for p in ["a.rs", "a.yml", "a.json", "a.py", "a.sh", "a.sql", "a.txt"] {
                for l in lines(p, &text) {
                    assert!(
                        !l.0.contains('<') || l.0.contains("<span"),
                        "{p}: {text:?} → {}",
                        l.0
                    );
                    assert!(
                        !l.0.replace("<span class=\"", "")
                            .replace("\">", "")
                            .replace("</span>", "")
                            .contains(['<', '>']),
                        "{p}: {text:?}"
                    );
                }
            }
            let a = crate::ansi(&text).0;
            assert!(
                !a.replace("<span class=\"", "")
                    .replace("\">", "")
                    .replace("</span>", "")
                    .contains(['<', '>']),
                "ansi: {text:?}"
            );
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "\"", "'\\", "/*", "*/", "\"é\\", "ü:", "- :", "\"k\"", "#", "`a\\`",
        ] {
            for p in ["a.rs", "a.yml", "a.json", "a.py", "a.sh", "a.sql"] {
                lines(p, s);
            }
        }
    }
}
