//! Headers-exchange matching (`x-match` = all, any, all-with-x, any-with-x).

use switchyard_model::{FieldTable, FieldValue};

/// How a headers binding combines its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    /// Every argument must match (the default).
    All,
    /// At least one argument must match.
    Any,
    /// Like `All`, but `x-` arguments take part too.
    AllWithX,
    /// Like `Any`, but `x-` arguments take part too.
    AnyWithX,
}

impl MatchMode {
    /// Read `x-match` from binding arguments; `None` if the value is invalid.
    pub fn from_args(args: &FieldTable) -> Option<Self> {
        match args.get("x-match") {
            None => Some(Self::All),
            Some(v) => match v.as_str()? {
                "all" => Some(Self::All),
                "any" => Some(Self::Any),
                "all-with-x" => Some(Self::AllWithX),
                "any-with-x" => Some(Self::AnyWithX),
                _ => None,
            },
        }
    }
}

/// Whether a message with `headers` matches a binding with `args`.
/// A `Void` argument matches any value of a present header (RabbitMQ).
pub fn matches(mode: MatchMode, args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let with_x = matches!(mode, MatchMode::AllWithX | MatchMode::AnyWithX);
    let any = matches!(mode, MatchMode::Any | MatchMode::AnyWithX);
    let mut considered = args
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.starts_with("x-")));
    let hit = |(k, v): (&String, &FieldValue)| {
        headers
            .and_then(|h| h.get(k))
            .is_some_and(|got| matches!(v, FieldValue::Void) || v.matches(got))
    };
    if any {
        considered.any(hit)
    } else {
        considered.all(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn all_any_and_x() {
        let s = FieldValue::string;
        let args = table(&[
            ("format", s("pdf")),
            ("type", s("report")),
            ("x-match", s("all")),
        ]);
        let full = table(&[
            ("format", s("pdf")),
            ("type", s("report")),
            ("extra", s("1")),
        ]);
        let half = table(&[("format", s("pdf"))]);
        let m = MatchMode::from_args(&args).unwrap();
        assert!(matches(m, &args, Some(&full)));
        assert!(!matches(m, &args, Some(&half)));
        assert!(!matches(m, &args, None));
        assert!(matches(MatchMode::Any, &args, Some(&half)));
        assert!(!matches(MatchMode::Any, &args, None));

        let xargs = table(&[("x-tenant", s("a"))]);
        let xh = table(&[("x-tenant", s("b"))]);
        assert!(
            matches(MatchMode::All, &xargs, Some(&xh)),
            "x- args ignored without -with-x"
        );
        assert!(!matches(MatchMode::AllWithX, &xargs, Some(&xh)));
        let void = table(&[("k", FieldValue::Void)]);
        assert!(matches(
            MatchMode::All,
            &void,
            Some(&table(&[("k", FieldValue::I32(3))]))
        ));
        assert_eq!(
            MatchMode::from_args(&table(&[("x-match", s("bogus"))])),
            None
        );
    }
}
