//! Bearer tokens with scopes, read from the server's token file.
//!
//! CI runners get a `write` token and developers a `read` one, so only the machines that
//! should populate the cache can; anonymous access is a separate, explicit setting.
//! Main types: [`Tokens`], [`Access`].
//!
//! File format, one token per line, `#` starts a comment:
//!
//! ```text
//! write ci-runner-token-0123456789
//! read  developer-token-abcdef
//! ```

use std::path::Path;

/// What a request may do. `Write` includes reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Write,
}

impl Access {
    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "none" => Some(Access::None),
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }
}

/// The tokens a server accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<(String, Access)>,
}

impl Tokens {
    /// Reads a token file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file `{}`: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(scope), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!(
                    "line {}: expected `read TOKEN` or `write TOKEN`",
                    n + 1
                ));
            };
            let access = match Access::parse(scope) {
                Some(a @ (Access::Read | Access::Write)) => a,
                _ => {
                    return Err(format!(
                        "line {}: unknown scope `{scope}` (use `read` or `write`)",
                        n + 1
                    ))
                }
            };
            if token.len() < 16 {
                return Err(format!(
                    "line {}: token is shorter than 16 characters; use a random one",
                    n + 1
                ));
            }
            entries.push((token.to_owned(), access));
        }
        Ok(Tokens { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The access a presented token grants; `None` for an unknown token. Compares every
    /// token in full, so timing does not reveal how much of a guess was right.
    pub fn access(&self, presented: &str) -> Option<Access> {
        let mut found = None;
        for (token, access) in &self.entries {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(*access);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes_and_comments() {
        let t = Tokens::parse(
            "# tokens\nwrite ci-0123456789abcdef\n\nread  dev-0123456789abcdef  # laptop\n",
        )
        .unwrap();
        assert_eq!(t.access("ci-0123456789abcdef"), Some(Access::Write));
        assert_eq!(t.access("dev-0123456789abcdef"), Some(Access::Read));
        assert_eq!(t.access("dev-0123456789abcdeF"), None);
        assert_eq!(t.access(""), None);
        assert!(Access::Write > Access::Read && Access::Read > Access::None);
    }

    #[test]
    fn rejects_bad_lines() {
        for (text, want) in [
            ("admin 0123456789abcdef0\n", "unknown scope"),
            ("write\n", "expected"),
            ("write a b\n", "expected"),
            ("read short\n", "shorter"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(
                err.contains(want) && err.contains("line 1"),
                "{text}: {err}"
            );
        }
    }
}
