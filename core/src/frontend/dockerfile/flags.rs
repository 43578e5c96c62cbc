//! Instruction flags (`--from=x`, `--link`, `--mount=...` repeated), checked as BuildKit's
//! `BFlags` does: each instruction declares the flags it takes, anything else is
//! `unknown flag: NAME` (with a suggestion when one is close).

use super::text::{suggest, with_suggestion};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    Strings,
}

#[derive(Debug, Clone)]
struct Flag {
    name: &'static str,
    kind: Kind,
    value: String,
    values: Vec<String>,
}

/// The flags given to one instruction and the ones it declares.
#[derive(Debug, Clone)]
pub(crate) struct Flags {
    args: Vec<String>,
    declared: Vec<Flag>,
    used: Vec<&'static str>,
}

impl Flags {
    pub(crate) fn new(args: &[String]) -> Self {
        Flags { args: args.to_vec(), declared: Vec::new(), used: Vec::new() }
    }

    fn declare(&mut self, name: &'static str, kind: Kind, value: &str) {
        self.declared.push(Flag { name, kind, value: value.to_owned(), values: Vec::new() });
    }

    /// Declares a boolean flag (`--link`, `--link=false`).
    pub(crate) fn add_bool(&mut self, name: &'static str, default: bool) {
        self.declare(name, Kind::Bool, if default { "true" } else { "false" });
    }

    /// Declares a flag with a value (`--from=builder`).
    pub(crate) fn add_string(&mut self, name: &'static str, default: &str) {
        self.declare(name, Kind::String, default);
    }

    /// Declares a flag that may be repeated (`--mount=...`).
    pub(crate) fn add_strings(&mut self, name: &'static str) {
        self.declare(name, Kind::Strings, "");
    }

    /// Checks the given flags against the declared ones and records their values.
    pub(crate) fn parse(&mut self) -> Result<(), String> {
        let args = std::mem::take(&mut self.args);
        for arg in &args {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {arg}"));
            };
            if body.is_empty() {
                return Ok(());
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(idx) = self.declared.iter().position(|f| f.name == name) else {
                let hint = suggest(name, self.declared.iter().map(|f| f.name), true);
                return Err(with_suggestion(format!("unknown flag: {name}"), hint));
            };
            let flag = &mut self.declared[idx];
            if self.used.contains(&flag.name) && flag.kind != Kind::Strings {
                return Err(format!("duplicate flag specified: {name}"));
            }
            if !self.used.contains(&flag.name) {
                self.used.push(flag.name);
            }
            match flag.kind {
                Kind::Bool => {
                    if value == Some("") {
                        return Err(format!("missing a value on flag: {name}"));
                    }
                    let lower = value.unwrap_or("").to_lowercase();
                    flag.value = match lower.as_str() {
                        "" => "true".to_owned(),
                        "true" | "false" => lower,
                        _ => {
                            return Err(format!(
                                "expecting boolean value for flag {name}, not: {}",
                                value.unwrap_or_default()
                            ))
                        }
                    };
                }
                Kind::String => match value {
                    Some(v) => flag.value = v.to_owned(),
                    None => return Err(format!("missing a value on flag: {name}")),
                },
                Kind::Strings => match value {
                    Some(v) => flag.values.push(v.to_owned()),
                    None => return Err(format!("missing a value on flag: {name}")),
                },
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&Flag> {
        self.declared.iter().find(|f| f.name == name)
    }

    /// The value of a declared string flag (its default when not given).
    pub(crate) fn string(&self, name: &str) -> String {
        self.get(name).map(|f| f.value.clone()).unwrap_or_default()
    }

    /// The value of a declared boolean flag.
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|f| f.value == "true")
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.get(name).map(|f| f.values.clone()).unwrap_or_default()
    }

    /// The names of the flags that were given, in order of first use.
    pub(crate) fn used(&self) -> Vec<String> {
        self.used.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut f = Flags::new(&args);
        f.add_string("str1", "HI");
        f.add_bool("bool1", false);
        f.add_bool("bool2", true);
        f.add_strings("many");
        f
    }

    #[test]
    fn accepts_declared_flags() {
        let mut f = flags(&[]);
        f.parse().unwrap();
        assert_eq!((f.string("str1"), f.bool("bool1"), f.bool("bool2")), ("HI".into(), false, true));
        assert!(f.used().is_empty());
        let mut f = flags(&["--str1=BYE", "--bool1", "--bool2=FALSE", "--many=a", "--many=b"]);
        f.parse().unwrap();
        assert_eq!((f.string("str1"), f.bool("bool1"), f.bool("bool2")), ("BYE".into(), true, false));
        assert_eq!(f.strings("many"), ["a", "b"]);
        assert_eq!(f.used(), ["str1", "bool1", "bool2", "many"]);
        let mut f = flags(&["--str1="]);
        f.parse().unwrap();
        assert_eq!(f.string("str1"), "");
        // `--` ends the flags.
        let mut f = flags(&["--", "--bogus"]);
        f.parse().unwrap();
    }

    #[test]
    fn rejects_like_bflags() {
        let err = |args: &[&str]| flags(args).parse().unwrap_err();
        assert_eq!(err(&["--str1"]), "missing a value on flag: str1");
        assert_eq!(err(&["--many"]), "missing a value on flag: many");
        assert_eq!(err(&["--bool1="]), "missing a value on flag: bool1");
        assert_eq!(err(&["--bool1=yes"]), "expecting boolean value for flag bool1, not: yes");
        assert_eq!(err(&["--str1=a", "--str1=b"]), "duplicate flag specified: str1");
        assert_eq!(err(&["--bool1", "--bool1"]), "duplicate flag specified: bool1");
        assert_eq!(err(&["--nope"]), "unknown flag: nope");
        assert_eq!(err(&["--str2=x"]), "unknown flag: str2 (did you mean str1?)");
        assert_eq!(err(&["-x"]), "arg should start with -- : -x");
    }
}
