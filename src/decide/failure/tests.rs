//! The failure machine's transitions, one by one.

use super::*;

const CFG: FailureConfig = FailureConfig {
    window_ms: 3000,
    probe_timeout_ms: 7000,
    answer_ms: 500,
};

#[test]
fn config_follows_rule_six() {
    assert_eq!(FailureConfig::new(1000, 2000).window_ms, 3000);
    assert_eq!(FailureConfig::new(5000, 2000).window_ms, 10_000);
    assert!(FailureConfig::new(1000, 2000).probe_timeout_ms >= 3000);
}

#[test]
fn up_to_suspect_probes_at_once() {
    let mut h = Health::Up;
    assert_eq!(
        h.on_hbdead(1, 100, &CFG),
        Ok(vec![Effect::Suspected { reporter: 1 }, Effect::Probe])
    );
    assert_eq!(
        h,
        Health::Suspect {
            reporter: 1,
            since_ms: 100,
            agreed: None,
        }
    );
    assert_eq!(h.deadline_ms(&CFG), Some(3101));
}

#[test]
fn suspect_to_dead_when_the_other_monitor_agrees_in_time() {
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 100,
        agreed: None,
    };
    // The same monitor again proves nothing.
    assert_eq!(h.on_hbdead(1, 200, &CFG), Err(Ignored));
    let cause = DeathCause::TwoMonitors {
        first: 1,
        second: 2,
    };
    assert_eq!(h.on_hbdead(2, 3100, &CFG), Ok(vec![Effect::Died(cause)]));
    assert_eq!(h, Health::Dead(cause));
}

#[test]
fn two_reports_sooner_than_the_probe_could_be_answered_wait_for_it() {
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 100,
        agreed: None,
    };
    assert_eq!(h.on_hbdead(2, 101, &CFG), Ok(Vec::new()));
    assert_eq!(h.deadline_ms(&CFG), Some(600));
    assert!(h.on_tick(599, &CFG).is_empty());
    let mut answered = h;
    assert_eq!(
        answered.on_alive(true),
        Ok(vec![Effect::PathFault { reporter: 1 }])
    );
    let cause = DeathCause::TwoMonitors {
        first: 1,
        second: 2,
    };
    assert_eq!(h.on_tick(600, &CFG), vec![Effect::Died(cause)]);
    assert_eq!(h, Health::Dead(cause));
}

#[test]
fn suspect_to_up_on_evidence_or_probe_answer() {
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 0,
        agreed: None,
    };
    assert_eq!(
        h.on_alive(false),
        Ok(vec![Effect::FalseAlarm { reporter: 1 }])
    );
    assert_eq!(h, Health::Up);
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 0,
        agreed: None,
    };
    assert_eq!(
        h.on_alive(true),
        Ok(vec![Effect::PathFault { reporter: 1 }])
    );
    assert_eq!(h.on_alive(true), Err(Ignored));
}

#[test]
fn suspect_to_disputed_when_the_window_ends() {
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 0,
        agreed: None,
    };
    assert!(h.on_tick(3000, &CFG).is_empty());
    assert_eq!(
        h,
        Health::Suspect {
            reporter: 1,
            since_ms: 0,
            agreed: None,
        }
    );
    assert!(h.on_tick(3001, &CFG).is_empty());
    assert_eq!(
        h,
        Health::Disputed {
            reporter: 1,
            since_ms: 0,
            until_ms: 7000,
            late: false,
        }
    );
    assert_eq!(h.deadline_ms(&CFG), Some(7001));
}

#[test]
fn disputed_to_up_with_a_path_fault_or_dead_by_probe() {
    let mut h = Health::Disputed {
        reporter: 1,
        since_ms: 0,
        until_ms: 7000,
        late: false,
    };
    assert_eq!(
        h.on_alive(true),
        Ok(vec![Effect::PathFault { reporter: 1 }])
    );
    let mut h = Health::Disputed {
        reporter: 1,
        since_ms: 0,
        until_ms: 7000,
        late: false,
    };
    assert!(h.on_tick(7000, &CFG).is_empty());
    let cause = DeathCause::Probe { reporter: 1 };
    assert_eq!(h.on_tick(7001, &CFG), vec![Effect::Died(cause)]);
    assert_eq!(h, Health::Dead(cause));
    // A second report in the disputed state confirms within the
    // window of the first.
    let mut h = Health::Disputed {
        reporter: 1,
        since_ms: 0,
        until_ms: 7000,
        late: false,
    };
    let mut late = h;
    assert_eq!(
        late.on_hbdead(2, 3001, &CFG),
        Ok(vec![Effect::Died(DeathCause::Probe { reporter: 2 })])
    );
    assert_eq!(
        h.on_hbdead(2, 3000, &CFG),
        Ok(vec![Effect::Died(DeathCause::TwoMonitors {
            first: 1,
            second: 2
        })])
    );
}

#[test]
fn an_unwatched_report_goes_straight_to_the_probe() {
    let mut h = Health::Up;
    assert_eq!(
        h.on_unwatched_report(4, 50, &CFG),
        Ok(vec![Effect::Suspected { reporter: 4 }, Effect::Probe])
    );
    assert_eq!(
        h,
        Health::Disputed {
            reporter: 4,
            since_ms: 50,
            until_ms: 7050,
            late: false,
        }
    );
    assert_eq!(h.on_unwatched_report(5, 60, &CFG), Err(Ignored));
    assert_eq!(h.deadline_ms(&CFG), Some(7051));
}

#[test]
fn a_lone_report_shortens_the_probe_to_the_window() {
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 100,
        agreed: None,
    };
    assert_eq!(h.on_lone_report(&CFG), Ok(vec![]));
    assert_eq!(
        h,
        Health::Disputed {
            reporter: 1,
            since_ms: 100,
            until_ms: 3100,
            late: false,
        }
    );
    assert_eq!(h.on_lone_report(&CFG), Err(Ignored));
    assert!(h.on_tick(3100, &CFG).is_empty());
    assert_eq!(
        h.on_tick(3101, &CFG),
        vec![Effect::Died(DeathCause::Probe { reporter: 1 })]
    );
}

#[test]
fn cut_off_instead_of_dead_then_back() {
    let mut h = Health::Dead(DeathCause::TwoMonitors {
        first: 1,
        second: 2,
    });
    assert_eq!(h.on_cut_off(900), Ok(vec![Effect::CutOff]));
    assert_eq!(
        h,
        Health::Unreachable {
            reporter: 1,
            since_ms: 900,
            probe_until_ms: None,
        }
    );
    assert_eq!(h.deadline_ms(&CFG), None);
    assert!(h.on_tick(1_000_000, &CFG).is_empty());
    assert_eq!(h.on_hbdead(3, 1000, &CFG), Err(Ignored));
    assert_eq!(h.on_cut_off(1000), Err(Ignored));
    let mut back = h;
    assert_eq!(back.on_alive(false), Ok(vec![Effect::Reconnected]));
    assert_eq!(back, Health::Up);
    // Its group is heard first: it must answer a probe; reports made
    // across the cut pair with nothing; unanswered, it is dead.
    assert_eq!(h.on_group_heard(2000, &CFG), Ok(vec![Effect::Probe]));
    assert_eq!(
        h,
        Health::Unreachable {
            reporter: 1,
            since_ms: 900,
            probe_until_ms: Some(9000),
        }
    );
    assert_eq!(h.on_group_heard(2500, &CFG), Err(Ignored));
    assert_eq!(h.on_hbdead(3, 2100, &CFG), Err(Ignored));
    assert_eq!(h.deadline_ms(&CFG), Some(9001));
    let mut answered = h;
    assert_eq!(answered.on_alive(true), Ok(vec![Effect::Reconnected]));
    assert_eq!(
        h.on_tick(9001, &CFG),
        vec![Effect::Died(DeathCause::Probe { reporter: 1 })]
    );
    assert_eq!(Health::Up.on_group_heard(0, &CFG), Err(Ignored));
    assert_eq!(Health::Up.on_cut_off(0), Err(Ignored));
    let mut h = Health::Unreachable {
        reporter: 1,
        since_ms: 0,
        probe_until_ms: None,
    };
    assert_eq!(h.on_startup(), Ok(vec![Effect::Rejoined]));
}

#[test]
fn a_second_report_pairs_only_within_the_window_of_the_first() {
    // The window ran out with one report: a later one from another
    // monitor does not pair with it (it may describe another silence);
    // with the probe unanswered since the first, the probe decides.
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 0,
        agreed: None,
    };
    assert!(h.on_tick(3001, &CFG).is_empty());
    assert_eq!(
        h.on_hbdead(2, 3500, &CFG),
        Ok(vec![Effect::Died(DeathCause::Probe { reporter: 2 })])
    );
    // Within the window, after a lone report: two monitors.
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 0,
        agreed: None,
    };
    h.on_lone_report(&CFG).unwrap();
    assert_eq!(
        h.on_hbdead(2, 2000, &CFG),
        Ok(vec![Effect::Died(DeathCause::TwoMonitors {
            first: 1,
            second: 2
        })])
    );
}

#[test]
fn reports_across_a_cut_only_probe_and_an_answer_is_no_path_fault() {
    let mut h = Health::Up;
    assert_eq!(h.on_late_report(1, 100, &CFG), Ok(vec![Effect::Probe]));
    // Another late report, even within the window, confirms nothing.
    assert_eq!(h.on_hbdead(2, 200, &CFG), Err(Ignored));
    assert_eq!(h.on_late_report(2, 200, &CFG), Err(Ignored));
    let mut answered = h;
    assert_eq!(answered.on_alive(true), Ok(vec![]));
    assert_eq!(answered, Health::Up);
    // Unanswered: dead by the probe.
    assert_eq!(
        h.on_tick(7101, &CFG),
        vec![Effect::Died(DeathCause::Probe { reporter: 1 })]
    );
    // A cut switch makes every member unreachable, whatever it was.
    for mut h in [
        Health::Up,
        Health::Suspect {
            reporter: 1,
            since_ms: 0,
            agreed: None,
        },
    ] {
        assert!(h.on_group_cut(5, 10).is_ok());
        assert!(matches!(h, Health::Unreachable { reporter: 5, .. }));
    }
    assert_eq!(Health::Left.on_group_cut(5, 10), Err(Ignored));
}

#[test]
fn a_long_silence_goes_through_disputed_to_dead_in_one_tick() {
    let mut h = Health::Suspect {
        reporter: 1,
        since_ms: 0,
        agreed: None,
    };
    assert_eq!(
        h.on_tick(60_000, &CFG),
        vec![Effect::Died(DeathCause::Probe { reporter: 1 })]
    );
}

#[test]
fn shutdown_and_rejoin() {
    for mut h in [
        Health::Up,
        Health::Suspect {
            reporter: 1,
            since_ms: 0,
            agreed: None,
        },
        Health::Disputed {
            reporter: 1,
            since_ms: 0,
            until_ms: 7000,
            late: false,
        },
    ] {
        assert_eq!(h.on_shutdown(), Ok(vec![Effect::Departed]));
        assert_eq!(h, Health::Left);
        assert_eq!(h.on_shutdown(), Err(Ignored));
        assert_eq!(h.on_hbdead(2, 0, &CFG), Err(Ignored));
        assert_eq!(h.on_startup(), Ok(vec![Effect::Rejoined]));
        assert_eq!(h, Health::Up);
    }
    let mut h = Health::Dead(DeathCause::Probe { reporter: 3 });
    assert_eq!(h.on_alive(false), Err(Ignored));
    let mut copy = h;
    assert_eq!(copy.on_martian(), Ok(vec![Effect::Resurrected]));
    assert_eq!(Health::Left.on_martian(), Err(Ignored));
    assert_eq!(Health::Up.on_martian(), Err(Ignored));
    assert!(h.on_tick(u64::MAX / 2, &CFG).is_empty());
    assert_eq!(h.on_startup(), Ok(vec![Effect::Rejoined]));
    assert_eq!(Health::Up.on_startup(), Err(Ignored));
}
