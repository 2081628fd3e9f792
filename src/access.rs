//! Who may invite and command the agent: glob patterns over Matrix user ids (and the same globs
//! over room ids and aliases, for the coding agents' rooms).

use regex::Regex;
use ruma::UserId;

/// A glob over a whole string: `*` matches any run of characters, `?` one, the rest literally.
#[derive(Debug, Clone)]
pub struct Glob(Regex);

impl Glob {
    pub fn new(glob: &str) -> Result<Self, String> {
        let mut re = String::from("^");
        for c in glob.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        Regex::new(&re).map(Self).map_err(|e| format!("{glob:?}: {e}"))
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// One `access.users` / `access.admins` entry: a [`Glob`] over user ids.
#[derive(Debug, Clone)]
pub struct Pattern(Glob);

impl Pattern {
    pub fn parse(glob: &str) -> Result<Self, String> {
        if !glob.starts_with('@') {
            return Err(format!("{glob:?} is not a user id pattern (it must start with @, e.g. \"@*:example.org\")"));
        }
        Glob::new(glob).map(Self)
    }

    pub fn matches(&self, user: &UserId) -> bool {
        self.0.is_match(user.as_str())
    }
}

/// The access policy, compiled once from config.
#[derive(Debug, Clone)]
pub struct Access {
    users: Vec<Pattern>,
    admins: Vec<Pattern>,
}

impl Access {
    pub fn new(users: &[String], admins: &[String]) -> Result<Self, String> {
        let compile = |v: &[String]| v.iter().map(|p| Pattern::parse(p)).collect::<Result<Vec<_>, _>>();
        Ok(Self { users: compile(users)?, admins: compile(admins)? })
    }

    /// May this user invite the agent and run its commands? Admins always may.
    pub fn is_user(&self, user: &UserId) -> bool {
        self.is_admin(user) || self.users.iter().any(|p| p.matches(user))
    }

    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.iter().any(|p| p.matches(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> &UserId {
        <&UserId>::try_from(s).unwrap()
    }

    #[test]
    fn globs_match_whole_ids_only() {
        let cases = [
            ("@*:conclave.local", "@alice:conclave.local", true),
            ("@*:conclave.local", "@alice:conclave.local.evil.org", false),
            ("@*:conclave.local", "@alice:evilconclave.local", false),
            ("@al?ce:x.y", "@alice:x.y", true),
            ("@al?ce:x.y", "@allice:x.y", false),
            ("@bob:x.y", "@bob:x.y", true),
            ("@bob:x.y", "@bobby:x.y", false),
            // A dot in the pattern is literal, not "any character".
            ("@*:a.b", "@u:axb", false),
        ];
        for (glob, user, want) in cases {
            assert_eq!(Pattern::parse(glob).unwrap().matches(uid(user)), want, "{glob} vs {user}");
        }
    }

    #[test]
    fn patterns_must_look_like_user_ids() {
        assert!(Pattern::parse("alice").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn admins_are_users_too() {
        let a = Access::new(&[], &["@root:x.y".into()]).unwrap();
        assert!(a.is_user(uid("@root:x.y")));
        assert!(a.is_admin(uid("@root:x.y")));
        assert!(!a.is_user(uid("@eve:x.y")));
    }
}
