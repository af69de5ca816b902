//! The health verdict, pure: which checks passed, failed, timed out or could not run, and
//! whether that makes the booted trial slot healthy. No I/O, no clock: the runners in
//! [`super`] produce the [`CheckResult`]s.

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Passed,
    /// The check ran and said no.
    Failed {
        detail: String,
    },
    /// The check did not finish before the deadline (or its own timeout).
    TimedOut {
        detail: String,
    },
    /// The check cannot run on this system (no systemd); [`Unavailable`] decides what it means.
    Unavailable {
        detail: String,
    },
}

/// What a check that cannot run counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unavailable {
    /// Skipped: reported as unavailable, not held against the slot (a system without systemd).
    #[default]
    Pass,
    /// Held against the slot: a station that must have systemd.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `systemd:<unit>`, `recorder`, `broker`, `command:<name>`.
    pub name: String,
    pub outcome: CheckOutcome,
    /// What an `Unavailable` outcome of this check counts as.
    pub if_unavailable: Unavailable,
}

impl CheckResult {
    /// True when this result does not stand against the slot.
    #[must_use]
    pub fn acceptable(&self) -> bool {
        match &self.outcome {
            CheckOutcome::Passed => true,
            CheckOutcome::Unavailable { .. } => self.if_unavailable == Unavailable::Pass,
            CheckOutcome::Failed { .. } | CheckOutcome::TimedOut { .. } => false,
        }
    }
}

/// The verdict over every configured check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// `check` is the first check (in configured order) that stands against the slot.
    Unhealthy {
        check: String,
        detail: String,
    },
}

/// Healthy only when every check passed or was unavailable and allowed to be. The first
/// failing check in configured order is named, with why (`failed`, `timed out` or
/// `unavailable`). No checks at all is healthy: the slot booted far enough to run the updater.
#[must_use]
pub fn decide(results: &[CheckResult]) -> Verdict {
    for r in results {
        if r.acceptable() {
            continue;
        }
        let detail = match &r.outcome {
            CheckOutcome::Failed { detail } => format!("failed: {detail}"),
            CheckOutcome::TimedOut { detail } => format!("timed out: {detail}"),
            CheckOutcome::Unavailable { detail } => format!("unavailable: {detail}"),
            CheckOutcome::Passed => String::new(),
        };
        return Verdict::Unhealthy {
            check: r.name.clone(),
            detail,
        };
    }
    Verdict::Healthy
}

/// A one-line summary for logs: `name=passed, name=failed, ...`.
#[must_use]
pub fn summary(results: &[CheckResult]) -> String {
    results
        .iter()
        .map(|r| {
            let what = match &r.outcome {
                CheckOutcome::Passed => "passed",
                CheckOutcome::Failed { .. } => "failed",
                CheckOutcome::TimedOut { .. } => "timed-out",
                CheckOutcome::Unavailable { .. } => "unavailable",
            };
            format!("{}={what}", r.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, outcome: CheckOutcome, if_unavailable: Unavailable) -> CheckResult {
        CheckResult {
            name: name.into(),
            outcome,
            if_unavailable,
        }
    }
    fn failed() -> CheckOutcome {
        CheckOutcome::Failed { detail: "x".into() }
    }
    fn timed_out() -> CheckOutcome {
        CheckOutcome::TimedOut { detail: "x".into() }
    }
    fn unavailable() -> CheckOutcome {
        CheckOutcome::Unavailable { detail: "x".into() }
    }

    #[test]
    fn verdicts_follow_the_table() {
        use CheckOutcome::Passed;
        use Unavailable::{Fail, Pass};
        let table: Vec<(Vec<CheckResult>, Option<&str>)> = vec![
            (vec![], None),
            (vec![r("a", Passed, Pass), r("b", Passed, Fail)], None),
            (
                vec![r("a", unavailable(), Pass), r("b", Passed, Pass)],
                None,
            ),
            (vec![r("a", unavailable(), Fail)], Some("a")),
            (
                vec![r("a", Passed, Pass), r("b", failed(), Pass)],
                Some("b"),
            ),
            (
                vec![r("a", timed_out(), Pass), r("b", failed(), Pass)],
                Some("a"),
            ),
            (
                vec![r("a", failed(), Pass), r("b", timed_out(), Pass)],
                Some("a"),
            ),
            (
                vec![r("a", unavailable(), Pass), r("b", timed_out(), Pass)],
                Some("b"),
            ),
        ];
        for (results, failing) in table {
            let verdict = decide(&results);
            match failing {
                None => assert_eq!(verdict, Verdict::Healthy, "{results:?}"),
                Some(name) => assert!(
                    matches!(&verdict, Verdict::Unhealthy { check, .. } if check == name),
                    "{results:?} gave {verdict:?}"
                ),
            }
        }
    }

    #[test]
    fn the_verdict_says_why_the_check_stands_against_the_slot() {
        let v = decide(&[r("command:probe", timed_out(), Unavailable::Pass)]);
        assert_eq!(
            v,
            Verdict::Unhealthy {
                check: "command:probe".into(),
                detail: "timed out: x".into()
            }
        );
        let v = decide(&[r("systemd:x", unavailable(), Unavailable::Fail)]);
        assert!(
            matches!(v, Verdict::Unhealthy { detail, .. } if detail.starts_with("unavailable"))
        );
    }

    #[test]
    fn the_summary_names_every_check() {
        let s = summary(&[
            r("a", CheckOutcome::Passed, Unavailable::Pass),
            r("b", unavailable(), Unavailable::Pass),
        ]);
        assert_eq!(s, "a=passed, b=unavailable");
    }
}
