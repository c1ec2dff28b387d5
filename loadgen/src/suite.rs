//! `suite`: short runs of the main scenarios back to back against one
//! server, every report printed and written. `--smoke` is the CI variant:
//! small sizes, a short warm-up, plus direct, a login storm and a small
//! connections run; it fails only on verification, never on latency.

use crate::cli::{
    BigroomParams, CallsParams, ConnectionsParams, DirectParams, FanoutParams, PresenceParams,
    RunOpts,
};
use crate::scenarios::{self, bigroom, calls, connections, direct, fanout, presence, Env, Target};
use crate::MainError;

/// Ids each scenario of the suite gets, so they never share users or rooms.
const ID_STRIDE: u64 = 10_000_000;

/// Runs the suite; returns whether every run verified. A scenario that
/// cannot run at all counts as failed and the suite goes on.
pub fn run(target: &Target, run: &RunOpts, smoke: bool) -> Result<bool, MainError> {
    let base = run.id_base.unwrap_or_else(scenarios::default_id_base);
    let mut opts = run.clone();
    if smoke {
        opts.warmup = opts.warmup.min(0.5);
    }
    let fan = FanoutParams {
        rooms: if smoke { 20 } else { 100 },
        members: 10,
        sender_share: 0.1,
        rate: if smoke { 2000.0 } else { 10000.0 },
        size: 64,
        max: false,
        window: 4,
        target: crate::cli::PubSubTarget::Chatd,
        publishers: None,
        redis: ([127, 0, 0, 1], 6379).into(),
        nats: ([127, 0, 0, 1], 4222).into(),
    };
    let dir = DirectParams {
        pairs: if smoke { 20 } else { 100 },
        devices: 2,
        rate: if smoke { 1000.0 } else { 5000.0 },
        size: 64,
    };
    let calls_p = CallsParams {
        rooms: if smoke { 50 } else { 200 },
        members: 4,
        flip_ms: if smoke { 400 } else { 1000 },
        heartbeat_min_ms: 2000,
        heartbeat_max_ms: 5000,
        heartbeat_batch: 1,
    };
    let pres = PresenceParams {
        users: if smoke { 200 } else { 500 },
        contacts: 6,
        room_size: 5,
        rate: if smoke { 200.0 } else { 500.0 },
        auto_share: 0.3,
        login_storm: false,
    };
    let storm = PresenceParams {
        login_storm: true,
        ..pres.clone()
    };
    let conns = ConnectionsParams {
        conns: 500,
        members: 10,
        hold_secs: 1.0,
    };
    let big = BigroomParams {
        members: 5000,
        online: 100,
        changes: 20,
        pipeline: 1,
        batch_members: 5000,
        batch_size: 2000,
        contact_pairs: 2000,
        membership_ops: 5,
    };
    type Step<'a> = (
        &'a str,
        Box<dyn Fn(&Env<'_>) -> Result<crate::report::Report, scenarios::ScenarioError> + 'a>,
    );
    let mut steps: Vec<Step<'_>> = vec![
        ("fanout", Box::new(|e| fanout::run(e, &fan))),
        ("calls", Box::new(|e| calls::run(e, &calls_p))),
        ("presence", Box::new(|e| presence::run(e, &pres))),
    ];
    if smoke {
        steps.push(("direct", Box::new(|e| direct::run(e, &dir))));
        steps.push((
            "presence-login-storm",
            Box::new(|e| presence::run(e, &storm)),
        ));
        steps.push(("connections", Box::new(|e| connections::run(e, &conns))));
        steps.push(("bigroom", Box::new(|e| bigroom::run(e, &big))));
    }
    let mut ok = true;
    let mut summary = Vec::new();
    for (i, (name, step)) in steps.iter().enumerate() {
        let env = Env {
            target,
            run: &opts,
            id_base: base + i as u64 * ID_STRIDE,
        };
        eprintln!("loadgen suite: running {name}");
        match step(&env) {
            Ok(report) => {
                let good = crate::emit(&report, &opts);
                ok &= good;
                summary.push(format!(
                    "{:<22} {}  sent {:>9.0}/s  deliveries {:>9.0}/s  p99 {}",
                    report.scenario,
                    if good { "ok  " } else { "FAIL" },
                    report.sent_per_sec,
                    report.deliveries_per_sec,
                    report
                        .latency_ms
                        .as_ref()
                        .map_or("-".to_string(), |p| format!("{:.3} ms", p.p99))
                ));
            }
            Err(e) => {
                ok = false;
                eprintln!("loadgen suite: {name} could not run: {e}");
                summary.push(format!("{name:<22} FAIL  could not run: {e}"));
            }
        }
    }
    println!("=== suite summary ===");
    for l in &summary {
        println!("{l}");
    }
    println!("reports in {}", opts.report_dir.display());
    Ok(ok)
}
