//! The health gate of a trial boot, pure: the configured checks' results and the service
//! manager's state decide whether the booted trial slot may be committed.
//!
//! No I/O, no clock: fleet-updated's runners (`fleet_updated::health`) ask the checks and
//! systemd, and carry out what [`decide`] and [`conclude`] say.
//!
//! # The rule
//! A trial slot is committed only on a system that is **up**, like systemd's own
//! `systemd-bless-boot`, which blesses a boot only once `boot-complete.target` is reached, and
//! never on one that is **going down**:
//! - The manager's state is systemd's `SystemState` (`systemctl is-system-running`).
//!   `running` and `degraded` are up: the boot transaction finished. `degraded` (some unit
//!   failed) is not held against the slot here: the unit checks (`systemd:<unit>`) say which
//!   units matter.
//! - `initializing` and `starting` (the boot has not finished), `maintenance` (rescue or
//!   emergency target active or queued), `offline` (systemctl finds no running manager) and
//!   `unknown` (the state could not be read) are not up: the gate keeps asking until its
//!   deadline, and a manager still not up then stands against the slot as the check
//!   [`SYSTEM_CHECK`], after the configured checks.
//! - `stopping` (a reboot, power-off, halt or kexec is queued or under way: the `shutdown.target`
//!   job) gives **no verdict** ([`Verdict::NoVerdict`]): the trial is neither committed nor
//!   failed, whatever the checks said (units stop, the broker session ends as the system goes
//!   down; an operator's reboot or a power button is not the slot's fault). The next boot
//!   decides, and the boot side counts it: on tryboot the reboot has no tryboot flag, the
//!   firmware boots the committed slot and the boot check spends an attempt; on U-Boot the
//!   boot counter (`BOOT_x_LEFT`) does; a daemon that comes back on the trial slot in the
//!   health-checking phase spends one of the engine's attempts (restarted during checks). So a
//!   slot that reboots at every boot is never committed and runs out of attempts.
//! - Without systemd ([`Manager::Unavailable`]) the state counts as the unit checks do when
//!   systemd is missing (`systemd-unavailable`): passed (default) or held against the slot.
//!
//! # When the manager is read, and the daemon's own stop
//! The state that [`decide`] is given must be read **after every check has answered**, right
//! before the verdict goes to the update engine (which marks the slot good at once, after one
//! journal write). systemd queues the `shutdown.target` job when a reboot is asked for, before
//! any stop job runs, so a reboot asked for before that reading is seen. And the daemon never
//! feeds a verdict after it was asked to stop (SIGTERM): [`conclude`] turns every verdict into
//! no verdict then. What is left is a reboot asked for in the milliseconds between the reading
//! and the boot flow's write: that boot did run the whole gate on a system that was up.

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

/// The name the manager's state stands against the slot under.
pub const SYSTEM_CHECK: &str = "system";

/// systemd's system state, as `systemctl is-system-running` prints it (the D-Bus property
/// `org.freedesktop.systemd1.Manager.SystemState`, plus systemctl's own `offline` and
/// `unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemState {
    Initializing,
    Starting,
    Running,
    Degraded,
    Maintenance,
    Stopping,
    Offline,
    /// The state could not be read, or a word this rule does not know.
    Unknown,
}

impl SystemState {
    pub const ALL: [SystemState; 8] = [
        SystemState::Initializing,
        SystemState::Starting,
        SystemState::Running,
        SystemState::Degraded,
        SystemState::Maintenance,
        SystemState::Stopping,
        SystemState::Offline,
        SystemState::Unknown,
    ];

    /// The state from systemctl's output (surrounding white space ignored); anything else is
    /// [`SystemState::Unknown`].
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let word = text.trim();
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == word)
            .unwrap_or(SystemState::Unknown)
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Initializing => "initializing",
            SystemState::Starting => "starting",
            SystemState::Running => "running",
            SystemState::Degraded => "degraded",
            SystemState::Maintenance => "maintenance",
            SystemState::Stopping => "stopping",
            SystemState::Offline => "offline",
            SystemState::Unknown => "unknown",
        }
    }

    /// What this state means for the gate.
    #[must_use]
    pub fn stance(self) -> Stance {
        match self {
            SystemState::Running | SystemState::Degraded => Stance::Up,
            SystemState::Stopping => Stance::GoingDown,
            SystemState::Initializing
            | SystemState::Starting
            | SystemState::Maintenance
            | SystemState::Offline
            | SystemState::Unknown => Stance::NotUp,
        }
    }
}

impl std::fmt::Display for SystemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one reading of the manager's state means for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stance {
    /// The boot finished: a slot whose checks passed may be committed.
    Up,
    /// Not (yet) up: keep asking until the deadline; still so then, it stands against the slot.
    NotUp,
    /// The system is going down: stop the gate, no verdict.
    GoingDown,
}

/// What the gate knows of the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// systemd answered (or was asked and did not: [`SystemState::Unknown`]).
    State(SystemState),
    /// No service manager on this system (no systemd, no systemctl).
    Unavailable { detail: String },
}

impl Manager {
    /// What this reading means for the gate; `if_unavailable` for a system without systemd.
    #[must_use]
    pub fn stance(&self, if_unavailable: Unavailable) -> Stance {
        match self {
            Manager::State(s) => s.stance(),
            Manager::Unavailable { .. } => match if_unavailable {
                Unavailable::Pass => Stance::Up,
                Unavailable::Fail => Stance::NotUp,
            },
        }
    }

    /// For logs: the state, or `unavailable`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Manager::State(s) => s.as_str(),
            Manager::Unavailable { .. } => "unavailable",
        }
    }
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed on a system that is up: the slot may be committed.
    Healthy,
    /// `check` is the first check (in configured order, then [`SYSTEM_CHECK`]) that stands
    /// against the slot.
    Unhealthy { check: String, detail: String },
    /// No verdict: the system is going down (`why`). Neither commit nor fail the trial; the
    /// next boot decides.
    NoVerdict { why: String },
}

/// The verdict over every configured check and the manager's state read after them:
/// - the manager `stopping`: no verdict, whatever the checks said;
/// - else the first check (in configured order) that failed, timed out or was unavailable
///   and not allowed to be: unhealthy, naming it and why;
/// - else the manager not up (see the module docs): unhealthy, check [`SYSTEM_CHECK`];
/// - else healthy. No checks at all, on a system that is up, is healthy: the slot booted far
///   enough to run the updater.
#[must_use]
pub fn decide(results: &[CheckResult], manager: &Manager, if_unavailable: Unavailable) -> Verdict {
    let stance = manager.stance(if_unavailable);
    if stance == Stance::GoingDown {
        return Verdict::NoVerdict {
            why: format!("the system is {}", manager.as_str()),
        };
    }
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
    match (stance, manager) {
        (Stance::Up, _) => Verdict::Healthy,
        (_, Manager::Unavailable { detail }) => Verdict::Unhealthy {
            check: SYSTEM_CHECK.into(),
            detail: format!("unavailable: {detail}"),
        },
        (_, Manager::State(s)) => Verdict::Unhealthy {
            check: SYSTEM_CHECK.into(),
            detail: format!("failed: the system is {s}, not up (running or degraded)"),
        },
    }
}

/// What the daemon does with a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion {
    /// Feed `HealthPassed`: the engine marks the slot good.
    Pass,
    /// Feed `HealthFailed` with `check`.
    Fail { check: String, detail: String },
    /// Feed nothing: the trial stays in its health-checking phase (persisted), and the next
    /// start of the daemon judges it.
    NoVerdict { why: String },
}

/// The verdict as the daemon carries it out: once the daemon was asked to stop (SIGTERM,
/// `stop_requested`), no verdict at all, so a stop never commits, nor fails a trial because
/// its units were being stopped.
#[must_use]
pub fn conclude(verdict: Verdict, stop_requested: bool) -> Conclusion {
    if stop_requested {
        return Conclusion::NoVerdict {
            why: "the daemon is stopping".into(),
        };
    }
    match verdict {
        Verdict::Healthy => Conclusion::Pass,
        Verdict::Unhealthy { check, detail } => Conclusion::Fail { check, detail },
        Verdict::NoVerdict { why } => Conclusion::NoVerdict { why },
    }
}

/// A one-line summary for logs: `name=passed, name=failed, ..., system=<state>`.
#[must_use]
pub fn summary(results: &[CheckResult], manager: &Manager) -> String {
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
        .chain(std::iter::once(format!(
            "{SYSTEM_CHECK}={}",
            manager.as_str()
        )))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn up() -> Manager {
        Manager::State(SystemState::Running)
    }
    fn no_systemd() -> Manager {
        Manager::Unavailable {
            detail: "no systemd".into(),
        }
    }

    #[test]
    fn verdicts_over_the_checks_follow_the_table_on_a_system_that_is_up() {
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
            let verdict = decide(&results, &up(), Unavailable::Pass);
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
        let v = decide(
            &[r("command:probe", timed_out(), Unavailable::Pass)],
            &up(),
            Unavailable::Pass,
        );
        assert_eq!(
            v,
            Verdict::Unhealthy {
                check: "command:probe".into(),
                detail: "timed out: x".into()
            }
        );
        let v = decide(
            &[r("systemd:x", unavailable(), Unavailable::Fail)],
            &up(),
            Unavailable::Pass,
        );
        assert!(
            matches!(v, Verdict::Unhealthy { detail, .. } if detail.starts_with("unavailable"))
        );
    }

    #[test]
    fn a_trial_whose_checks_passed_is_not_committed_while_the_system_is_stopping() {
        let passed = [r("broker", CheckOutcome::Passed, Unavailable::Fail)];
        let v = decide(
            &passed,
            &Manager::State(SystemState::Stopping),
            Unavailable::Pass,
        );
        assert_eq!(
            v,
            Verdict::NoVerdict {
                why: "the system is stopping".into()
            }
        );
    }

    #[test]
    fn a_check_that_failed_while_the_system_is_stopping_does_not_fail_the_trial() {
        let v = decide(
            &[r(
                "systemd:fleet-recorderd.service",
                failed(),
                Unavailable::Pass,
            )],
            &Manager::State(SystemState::Stopping),
            Unavailable::Pass,
        );
        assert!(matches!(v, Verdict::NoVerdict { .. }), "{v:?}");
    }

    #[test]
    fn a_system_still_starting_at_the_deadline_stands_against_the_slot_after_the_checks() {
        let v = decide(
            &[],
            &Manager::State(SystemState::Starting),
            Unavailable::Pass,
        );
        assert!(
            matches!(&v, Verdict::Unhealthy { check, detail } if check == SYSTEM_CHECK && detail.contains("starting")),
            "{v:?}"
        );
        // A failed check is named first: it says more than the boot that did not finish.
        let v = decide(
            &[r("broker", failed(), Unavailable::Fail)],
            &Manager::State(SystemState::Starting),
            Unavailable::Pass,
        );
        assert!(matches!(&v, Verdict::Unhealthy { check, .. } if check == "broker"));
    }

    #[test]
    fn a_degraded_system_is_up_and_its_failed_units_are_left_to_the_unit_checks() {
        let v = decide(
            &[r(
                "systemd:fleet-updated.service",
                CheckOutcome::Passed,
                Unavailable::Pass,
            )],
            &Manager::State(SystemState::Degraded),
            Unavailable::Pass,
        );
        assert_eq!(v, Verdict::Healthy);
    }

    #[test]
    fn without_systemd_the_manager_counts_as_the_unit_checks_do() {
        assert_eq!(
            decide(&[], &no_systemd(), Unavailable::Pass),
            Verdict::Healthy
        );
        let v = decide(&[], &no_systemd(), Unavailable::Fail);
        assert!(
            matches!(&v, Verdict::Unhealthy { check, detail } if check == SYSTEM_CHECK && detail.starts_with("unavailable")),
            "{v:?}"
        );
    }

    #[test]
    fn systemctls_words_are_read_and_anything_else_is_unknown() {
        for s in SystemState::ALL {
            assert_eq!(SystemState::parse(&format!("{s}\n")), s);
        }
        assert_eq!(SystemState::parse(""), SystemState::Unknown);
        assert_eq!(SystemState::parse("Running"), SystemState::Unknown);
        assert_eq!(SystemState::parse("running degraded"), SystemState::Unknown);
    }

    #[test]
    fn a_daemon_asked_to_stop_carries_out_no_verdict() {
        for v in [
            Verdict::Healthy,
            Verdict::Unhealthy {
                check: "broker".into(),
                detail: "failed".into(),
            },
        ] {
            assert!(matches!(conclude(v, true), Conclusion::NoVerdict { .. }));
        }
        assert_eq!(conclude(Verdict::Healthy, false), Conclusion::Pass);
    }

    #[test]
    fn the_summary_names_every_check_and_the_system() {
        let s = summary(
            &[
                r("a", CheckOutcome::Passed, Unavailable::Pass),
                r("b", unavailable(), Unavailable::Pass),
            ],
            &Manager::State(SystemState::Degraded),
        );
        assert_eq!(s, "a=passed, b=unavailable, system=degraded");
    }

    fn any_outcome() -> impl Strategy<Value = CheckOutcome> {
        prop_oneof![
            Just(CheckOutcome::Passed),
            ".{0,8}".prop_map(|detail| CheckOutcome::Failed { detail }),
            ".{0,8}".prop_map(|detail| CheckOutcome::TimedOut { detail }),
            ".{0,8}".prop_map(|detail| CheckOutcome::Unavailable { detail }),
        ]
    }

    fn any_unavailable() -> impl Strategy<Value = Unavailable> {
        prop_oneof![Just(Unavailable::Pass), Just(Unavailable::Fail)]
    }

    fn any_results() -> impl Strategy<Value = Vec<CheckResult>> {
        proptest::collection::vec(
            ("[a-z:.]{1,12}", any_outcome(), any_unavailable()).prop_map(
                |(name, outcome, if_unavailable)| CheckResult {
                    name,
                    outcome,
                    if_unavailable,
                },
            ),
            0..6,
        )
    }

    fn any_manager() -> impl Strategy<Value = Manager> {
        prop_oneof![
            proptest::sample::select(SystemState::ALL.to_vec()).prop_map(Manager::State),
            ".{0,8}".prop_map(|detail| Manager::Unavailable { detail }),
        ]
    }

    proptest! {
        #[test]
        fn never_healthy_nor_unhealthy_while_the_system_is_stopping(
            results in any_results(),
            if_unavailable in any_unavailable(),
        ) {
            let v = decide(&results, &Manager::State(SystemState::Stopping), if_unavailable);
            prop_assert!(matches!(v, Verdict::NoVerdict { .. }), "{:?}", v);
        }

        #[test]
        fn healthy_only_when_every_check_is_acceptable_and_the_system_is_up(
            results in any_results(),
            manager in any_manager(),
            if_unavailable in any_unavailable(),
        ) {
            let v = decide(&results, &manager, if_unavailable);
            let up = manager.stance(if_unavailable) == Stance::Up;
            let all_ok = results.iter().all(CheckResult::acceptable);
            prop_assert_eq!(v == Verdict::Healthy, up && all_ok, "{:?}", v);
            if let Manager::State(s) = &manager
                && !matches!(s, SystemState::Running | SystemState::Degraded)
            {
                prop_assert_ne!(v, Verdict::Healthy);
            }
        }

        #[test]
        fn no_verdict_only_while_the_system_is_stopping(
            results in any_results(),
            manager in any_manager(),
            if_unavailable in any_unavailable(),
        ) {
            let v = decide(&results, &manager, if_unavailable);
            prop_assert_eq!(
                matches!(v, Verdict::NoVerdict { .. }),
                manager == Manager::State(SystemState::Stopping)
            );
        }

        #[test]
        fn an_unhealthy_verdict_names_the_first_check_against_the_slot_or_the_system(
            results in any_results(),
            manager in any_manager(),
            if_unavailable in any_unavailable(),
        ) {
            if let Verdict::Unhealthy { check, .. } = decide(&results, &manager, if_unavailable) {
                match results.iter().find(|r| !r.acceptable()) {
                    Some(first) => prop_assert_eq!(check, first.name.clone()),
                    None => {
                        prop_assert_eq!(check, SYSTEM_CHECK);
                        prop_assert_ne!(manager.stance(if_unavailable), Stance::Up);
                    }
                }
            }
        }

        #[test]
        fn a_stop_request_never_commits_nor_fails_a_trial(
            results in any_results(),
            manager in any_manager(),
            if_unavailable in any_unavailable(),
        ) {
            let c = conclude(decide(&results, &manager, if_unavailable), true);
            prop_assert!(matches!(c, Conclusion::NoVerdict { .. }), "{:?}", c);
        }

        #[test]
        fn parsing_any_text_gives_a_state_whose_name_is_that_text_or_unknown(text in ".{0,16}") {
            let s = SystemState::parse(&text);
            prop_assert!(s == SystemState::Unknown || s.as_str() == text.trim());
        }
    }
}
