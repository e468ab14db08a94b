//! The README's runnable examples, read from README.md itself, so the text users follow and what the
//! test checks cannot drift apart (tests/tests/readme.rs runs them against a real `cargo xtask up`).
//!
//! Which blocks: fenced code blocks whose info string is `sh tested` (GitHub shows them as plain `sh`).
//! `sh tested needs-spin` blocks run only when a Spin CLI is found. Other blocks are not run.
//!
//! Commands: one per line, continued by a trailing `\` or an open quote, as `sh` reads them. A line
//! that is only a comment is prose. `export NAME=...` and `. file` lines are kept and run before every
//! later command of the README, as they would be in the reader's shell.
//!
//! Promises: the trailing `# comment` of a command says what it prints, in words a reader understands
//! and with these parts read by the test (anything else is prose):
//! * a leading HTTP status, `# 404`: the (`curl -i`) response has that status;
//! * `x-cache: MISS` (any `x-...`, `retry-after`, `location`, `content-type`, `cache-control` or `etag`
//!   header): the response has that header with that value, or with it among comma-separated items;
//!   `retry-after: ...`: the header is there, with any value;
//! * a JSON object, `{"error":{"code":"invalid_id",...}}`: the response body holds it. `...` as a value
//!   stands for any value; a trailing `...` member for any other members (without it, the keys must be
//!   exactly those);
//! * ``prints `text` ``: the output contains `text`;
//! * `within N s`: the command is repeated until its promises hold, for at most N seconds (without it,
//!   they must hold the first time);
//! * `serves HOST:PORT until Ctrl-C`: a server in the foreground (`spin up`). It runs in the
//!   background until the end of its block, the next commands run once HOST:PORT accepts connections,
//!   and at the end of the block it gets Ctrl-C and must stop, leaving no process behind. A
//!   `cargo xtask up [flags]` that serves (after the README stopped the stack, e.g. to start over)
//!   starts the stack under test again with those flags, for the rest of the README.
//!
//! Every other command must also exit with status 0.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// A fenced block the README test runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The `## ` section it is in.
    pub section: String,
    /// 1-based line of its opening fence.
    pub line: usize,
    /// Run only when a Spin CLI is found.
    pub needs_spin: bool,
    pub commands: Vec<Command>,
}

/// One command of a block and what its comment promises.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// 1-based line where it starts.
    pub line: usize,
    /// The command as `sh -c` gets it (comments removed, continuation lines kept).
    pub text: String,
    /// Its comment (all its lines' comments, joined), as written.
    pub comment: String,
    /// `export ...` or `. file`: kept for the commands after it.
    pub setup: bool,
    pub expect: Expect,
}

/// What a command's comment promises (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub status: Option<u16>,
    /// Lower-case header name and the value promised.
    pub headers: Vec<(String, String)>,
    /// The JSON pattern the body must match.
    pub json: Option<Value>,
    /// Text the output must contain.
    pub prints: Vec<String>,
    /// Repeat until the promises hold, for at most this long.
    pub within: Option<Duration>,
    /// A server that listens on this `host:port` until Ctrl-C.
    pub serves: Option<String>,
}

impl Expect {
    /// Does it promise anything about an HTTP response?
    pub fn is_http(&self) -> bool {
        self.status.is_some() || !self.headers.is_empty()
    }
}

/// Headers a comment may promise (besides every `x-...` one).
const HEADERS: &[&str] = &[
    "retry-after",
    "location",
    "content-type",
    "cache-control",
    "etag",
];

/// Marks, in a JSON pattern, a value that may be anything.
const ANY: &str = "\u{0}any";
/// Marks, in a JSON pattern, that other members may follow.
const REST: &str = "\u{0}rest";

/// The tested blocks of a README, in order.
pub fn parse(readme: &str) -> anyhow::Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut lines = readme.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_string();
            continue;
        }
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let words: Vec<&str> = info.split_whitespace().collect();
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push(l);
        }
        if words.first() != Some(&"sh") || !words.contains(&"tested") {
            continue;
        }
        let commands = split_commands(&body.join("\n"), i + 2)
            .with_context(|| format!("README.md line {}: the block's commands", i + 1))?;
        blocks.push(Block {
            section: section.clone(),
            line: i + 1,
            needs_spin: words.contains(&"needs-spin"),
            commands,
        });
    }
    Ok(blocks)
}

/// Every fenced `sh` block of a README with its section and whether it is tested: to check that a
/// section's examples are all tested.
pub fn sh_blocks(readme: &str) -> Vec<(String, usize, bool)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut in_block = false;
    for (i, line) in readme.lines().enumerate() {
        if let Some(title) = line.strip_prefix("## ").filter(|_| !in_block) {
            section = title.trim().to_string();
        } else if let Some(info) = line.strip_prefix("```") {
            if in_block {
                in_block = false;
            } else {
                in_block = true;
                let words: Vec<&str> = info.split_whitespace().collect();
                if words.first() == Some(&"sh") {
                    out.push((section.clone(), i + 1, words.contains(&"tested")));
                }
            }
        }
    }
    out
}

/// Splits a block's text into commands the way `sh` reads lines: quotes and a trailing `\` continue a
/// command; `#` at the start of a word, outside quotes, starts a comment.
fn split_commands(text: &str, first_line: usize) -> anyhow::Result<Vec<Command>> {
    let mut commands = Vec::new();
    let mut code = String::new();
    let mut comment = String::new();
    let mut start_line = first_line;
    let mut line = first_line;
    let mut quote: Option<char> = None;
    let mut in_comment = false;
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            in_comment = false;
            if quote.is_none() && !code.trim_end().ends_with('\\') {
                if !code.trim().is_empty() {
                    commands.push(command(start_line, &code, &comment)?);
                }
                code.clear();
                comment.clear();
                start_line = line;
            } else {
                code.push('\n');
                comment.push(' ');
            }
            prev = Some(c);
            continue;
        }
        if in_comment {
            comment.push(c);
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => {
                code.push(c);
                if let Some(next) = chars.next() {
                    code.push(next);
                }
                prev = Some(' ');
                continue;
            }
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_none_or(char::is_whitespace) => {
                in_comment = true;
                prev = Some(c);
                continue;
            }
            None => {}
        }
        if code.trim().is_empty() && c.is_whitespace() && code.is_empty() {
            prev = Some(c);
            continue;
        }
        code.push(c);
        prev = Some(c);
    }
    if quote.is_some() {
        bail!("a quote opened on line {start_line} is never closed");
    }
    if !code.trim().is_empty() {
        commands.push(command(start_line, &code, &comment)?);
    }
    Ok(commands)
}

fn command(line: usize, code: &str, comment: &str) -> anyhow::Result<Command> {
    let text = code.trim().to_string();
    let comment = comment.split_whitespace().collect::<Vec<_>>().join(" ");
    let setup = text.starts_with("export ") || text.starts_with(". ");
    let expect = parse_expect(&comment).with_context(|| format!("line {line}: # {comment}"))?;
    Ok(Command {
        line,
        text,
        comment,
        setup,
        expect,
    })
}

/// Reads the promises of a comment (see the module documentation).
pub fn parse_expect(comment: &str) -> anyhow::Result<Expect> {
    let mut expect = Expect::default();
    let words: Vec<&str> = comment.split_whitespace().collect();
    if let Some(first) = words.first() {
        let digits: String = first.chars().take_while(char::is_ascii_digit).collect();
        let rest = &first[digits.len()..];
        if digits.len() == 3 && (rest.is_empty() || rest.starts_with([',', ':', ';'])) {
            expect.status = Some(digits.parse()?);
        }
    }
    for pair in words.windows(2) {
        let Some(name) = pair[0].strip_suffix(':') else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        if name.starts_with("x-") || HEADERS.contains(&name.as_str()) {
            let value = pair[1].trim_end_matches([',', ';', ')']);
            let value = if value == "..." {
                value
            } else {
                value.trim_end_matches([':', '.'])
            };
            expect.headers.push((name, value.to_string()));
        }
    }
    for triple in words.windows(3) {
        if triple[0] == "within" && triple[2].trim_end_matches([',', ';', ')', ':', '.']) == "s" {
            let secs: f64 = triple[1]
                .parse()
                .with_context(|| format!("`within {} s`: not a number", triple[1]))?;
            expect.within = Some(Duration::from_secs_f64(secs));
        }
    }
    for words in words.windows(4) {
        if words[0] == "serves" && words[2] == "until" && words[3].starts_with("Ctrl-C") {
            let address = words[1];
            anyhow::ensure!(
                address
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok()),
                "`serves {address} until Ctrl-C`: not a host:port"
            );
            expect.serves = Some(address.to_string());
        }
    }
    let mut rest = comment;
    while let Some(at) = rest.find("prints `") {
        let after = &rest[at + "prints `".len()..];
        let end = after
            .find('`')
            .context("`prints `...`` without its closing backquote")?;
        expect.prints.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    if let Some(start) = comment.find('{') {
        let object = balanced_object(&comment[start..])
            .context("a `{` starts a JSON promise that is never closed")?;
        expect.json = Some(json_pattern(object)?);
    }
    Ok(expect)
}

/// The `{...}` at the start of `text`, up to its matching `}` (braces in strings do not count).
fn balanced_object(text: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// A JSON promise with its `...`s turned into markers, parsed.
fn json_pattern(object: &str) -> anyhow::Result<Value> {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    let bytes = object.as_bytes();
    while i < object.len() {
        let c = bytes[i] as char;
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if object[i..].starts_with("...") {
            let before = out.trim_end();
            if before.ends_with(':') {
                out.push_str(&Value::from(ANY).to_string());
            } else {
                out.push_str(&format!("{}:true", Value::from(REST)));
            }
            i += 3;
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        // Multi-byte characters outside strings are not JSON anyway; copy them whole.
        let len = object[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&object[i..i + len]);
        i += len;
    }
    serde_json::from_str(&out).with_context(|| format!("not a JSON promise: {object}"))
}

/// Does `actual` keep the JSON promise `pattern`? `Err` says where it does not.
pub fn json_matches(pattern: &Value, actual: &Value) -> Result<(), String> {
    match (pattern, actual) {
        (Value::String(s), _) if s == ANY => Ok(()),
        (Value::Object(want), Value::Object(got)) => {
            let open = want.contains_key(REST);
            for (key, value) in want {
                if key == REST {
                    continue;
                }
                let Some(found) = got.get(key) else {
                    return Err(format!("no {key:?} in {actual}"));
                };
                json_matches(value, found).map_err(|e| format!("{key}: {e}"))?;
            }
            if !open && let Some(extra) = got.keys().find(|k| !want.contains_key(*k)) {
                return Err(format!(
                    "{extra:?} is not promised (add `...` for other members): {actual}"
                ));
            }
            Ok(())
        }
        _ if pattern == actual => Ok(()),
        _ => Err(format!("expected {pattern}, got {actual}")),
    }
}

/// A `curl -i` response: the last one in the output (after any `100 Continue`).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn parse(output: &str) -> anyhow::Result<Self> {
        let mut rest = output;
        loop {
            anyhow::ensure!(
                rest.starts_with("HTTP/"),
                "not an HTTP response (curl -i): {output:.200}"
            );
            let (head, body) = rest
                .split_once("\r\n\r\n")
                .or_else(|| rest.split_once("\n\n"))
                .unwrap_or((rest, ""));
            let mut lines = head.lines();
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .context("no status line")?;
            if status == 100 && body.starts_with("HTTP/") {
                rest = body;
                continue;
            }
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Ok(Self {
                status,
                headers,
                body: body.to_string(),
            });
        }
    }

    /// The values of header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Checks a command's output against its promises; `Err` names the first broken one.
pub fn check(expect: &Expect, stdout: &str) -> Result<(), String> {
    for text in &expect.prints {
        if !stdout.contains(text.as_str()) {
            return Err(format!("does not print `{text}`"));
        }
    }
    let body = if expect.is_http() {
        let response = Response::parse(stdout).map_err(|e| format!("{e:#}"))?;
        if let Some(status) = expect.status
            && response.status != status
        {
            return Err(format!("status {} instead of {status}", response.status));
        }
        for (name, want) in &expect.headers {
            let values = response.header(name);
            let kept = values.iter().any(|v| {
                want == "..." || v == want || v.split(',').any(|item| item.trim() == want)
            });
            if !kept {
                return Err(format!("{name}: {values:?} instead of {want}"));
            }
        }
        response.body
    } else {
        stdout.to_string()
    };
    if let Some(pattern) = &expect.json {
        let actual: Value = serde_json::from_str(body.trim())
            .map_err(|e| format!("the body is not JSON ({e}): {body:.200}"))?;
        json_matches(pattern, &actual)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = r#"# demo

## What to try

```sh tested
curl -i http://127.0.0.1:3000/users/1          # 200, x-cache: MISS (origin, PostgreSQL)
curl -i http://127.0.0.1:3000/users/abc        # 400 {"error":{"code":"invalid_id",...}}
# a comment line, prose
curl -i -X POST http://127.0.0.1:3000/users -H 'content-type: application/json' \
     -d '{"full_name":"Ana # not a comment",
          "gender":"X"}'   # 422: gender must be "M" or "F"
export TOKEN="$(cat .aside/secrets/t)"         # kept for the commands below
curl -s http://127.0.0.1:3000/users/2          # prints `"id":2` within 5 s
```

```sh
cargo xtask up    # not tested
```

## Deploying

```sh tested needs-spin
spin build        # prints `Finished`
```
"#;

    #[test]
    fn tested_blocks_commands_and_their_promises_are_read() {
        let blocks = parse(README).unwrap();
        assert_eq!(blocks.len(), 2);
        let what = &blocks[0];
        assert_eq!(
            (what.section.as_str(), what.line, what.needs_spin),
            ("What to try", 5, false)
        );
        let texts: Vec<&str> = what.commands.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts.len(), 5, "{texts:#?}");
        assert_eq!(what.commands[0].expect.status, Some(200));
        assert_eq!(
            what.commands[0].expect.headers,
            [("x-cache".to_string(), "MISS".to_string())]
        );
        assert_eq!(what.commands[1].expect.status, Some(400));
        assert_eq!(
            what.commands[1].expect.json,
            Some(serde_json::json!({"error": {"code": "invalid_id", REST: true}}))
        );
        let post = &what.commands[2];
        assert_eq!(post.line, 9);
        assert!(post.text.contains("Ana # not a comment"), "{}", post.text);
        assert!(post.text.ends_with("\"gender\":\"X\"}'"), "{}", post.text);
        assert_eq!(post.expect.status, Some(422));
        assert!(what.commands[3].setup);
        assert_eq!(what.commands[4].expect.prints, ["\"id\":2"]);
        assert_eq!(what.commands[4].expect.within, Some(Duration::from_secs(5)));
        assert!(blocks[1].needs_spin);
        assert_eq!(
            sh_blocks(README)
                .iter()
                .map(|(s, _, t)| (s.as_str(), *t))
                .collect::<Vec<_>>(),
            [
                ("What to try", true),
                ("What to try", false),
                ("Deploying", true)
            ]
        );
    }

    #[test]
    fn a_server_promise_names_where_it_listens() {
        let expect =
            parse_expect("serves 127.0.0.1:3001 until Ctrl-C, with the local stack").unwrap();
        assert_eq!(expect.serves.as_deref(), Some("127.0.0.1:3001"));
        assert_eq!(expect.status, None);
        assert_eq!(parse_expect("runs until Ctrl-C").unwrap().serves, None);
        let bad = parse_expect("serves localhost until Ctrl-C").unwrap_err();
        assert!(format!("{bad:#}").contains("not a host:port"), "{bad:#}");
    }

    fn response(status: &str, headers: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\n{headers}\r\n\r\n{body}")
    }

    #[test]
    fn a_response_keeps_or_breaks_each_kind_of_promise() {
        let miss = response(
            "200 OK",
            "x-cache: MISS\r\nx-edge-breaker: redis=open, origin=open",
            r#"{"id":1,"email":"a@b","department":"Sales"}"#,
        );
        let ok = |comment: &str| check(&parse_expect(comment).unwrap(), &miss);
        assert_eq!(ok("200, x-cache: MISS (origin)"), Ok(()));
        assert!(ok("404").unwrap_err().contains("status 200 instead of 404"));
        assert!(ok("200, x-cache: L1").unwrap_err().contains("x-cache"));
        assert_eq!(ok("x-edge-breaker: origin=open"), Ok(()));
        assert_eq!(ok("x-edge-breaker: ..."), Ok(()));
        assert!(ok("retry-after: ...").unwrap_err().contains("retry-after"));
        assert_eq!(ok(r#"200 {"id":1,...}"#), Ok(()));
        assert_eq!(
            ok(r#"200 {"id":...,"email":...,"department":"Sales"}"#),
            Ok(())
        );
        assert!(
            ok(r#"200 {"id":1,"email":...}"#)
                .unwrap_err()
                .contains("department")
        );
        assert!(ok(r#"200 {"department":"Security",...}"#).is_err());
        assert_eq!(ok("prints `a@b`"), Ok(()));
        assert!(ok("prints `Security`").is_err());
        // Prose that only looks like a promise is not one.
        assert_eq!(
            parse_expect("the origin's Prometheus metrics").unwrap(),
            Expect::default()
        );
    }

    /// The README as committed: its promises parse and an answer that keeps them passes; the same README
    /// with one promise edited (a status, an `x-cache`, a JSON code) fails on that same answer.
    #[test]
    fn an_edit_that_breaks_a_promise_of_the_real_readme_fails_the_check() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let first_read = |readme: &str, url_end: &str| -> Command {
            parse(readme)
                .unwrap()
                .into_iter()
                .flat_map(|b| b.commands)
                .find(|c| c.text.ends_with(url_end))
                .unwrap_or_else(|| panic!("the README reads {url_end}"))
        };
        let not_found = response(
            "404 Not Found",
            "x-cache: MISS",
            r#"{"error":{"code":"not_found","message":"no user with id 999999"}}"#,
        );
        let miss = response("200 OK", "x-cache: MISS", r#"{"id":1}"#);
        let cases = [
            ("/users/999999", &not_found, "404", "410"),
            ("/users/999999", &not_found, "not_found", "gone"),
            ("/users/1", &miss, "x-cache: MISS", "x-cache: L2"),
        ];
        for (url_end, answer, promise, edited_promise) in cases {
            let command = first_read(&readme, url_end);
            assert_eq!(
                check(&command.expect, answer),
                Ok(()),
                "{}",
                command.comment
            );
            let edited = readme.replacen(
                &command.comment,
                &command.comment.replacen(promise, edited_promise, 1),
                1,
            );
            assert_ne!(edited, readme, "{promise} is in the README's comment");
            let command = first_read(&edited, url_end);
            assert!(
                check(&command.expect, answer).is_err(),
                "an edit of {promise} to {edited_promise} went unnoticed"
            );
        }
    }
}
