//! Access decisions per second on the shipped care-plan policy: the compiled evaluator, the
//! reference interpreter, and the same policy written in Cedar (`benches/cedar/careplan.cedar`)
//! evaluated by the `cedar-policy` crate, in one run.
//!
//! The workload is every decision fixture in `policies/tests/` (permits and denies across all
//! rules), with roles already mapped. Cedar gets its best case: its request and entities are built
//! before timing, so only `Authorizer::is_authorized` is timed, against our evaluators' `decide`.
//! Before timing, every fixture must get the same answer from all three (Cedar's reasons must
//! include our deciding rule), or the run stops.
//!
//! Run: `cargo bench --bench policy_decide` (criterion; ends with a table and `POLICY` line).

#[path = "cedar/model.rs"]
mod cedar_model;

use std::hint::black_box;

use carebroker::policy::interpret;
use cedar_policy::Authorizer;
use criterion::{Criterion, Throughput};

const GROUP: &str = "policy_decide";

fn main() {
    let fixtures = cedar_model::Fixtures::load();
    let loaded = &fixtures.policy;
    let requests = fixtures.requests();
    let cedar = cedar_model::CedarPolicy::load();
    let questions: Vec<_> = requests.iter().map(cedar_model::question).collect();
    let authorizer = Authorizer::new();
    let disagreements = cedar_model::disagreements(loaded, &cedar, &requests, &fixtures.names());
    assert!(disagreements.is_empty(), "the evaluators disagree: {disagreements:#?}");
    let n = requests.len();
    println!("{n} fixture decisions agree across compiled, interpreter and Cedar");

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group(GROUP);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function("compiled", |b| {
            b.iter(|| {
                for r in &requests {
                    black_box(loaded.compiled.decide(black_box(r)));
                }
            })
        });
        group.bench_function("interpreter", |b| {
            b.iter(|| {
                for r in &requests {
                    black_box(interpret::decide(&loaded.source, black_box(r)));
                }
            })
        });
        group.bench_function("cedar", |b| {
            b.iter(|| {
                for q in &questions {
                    black_box(authorizer.is_authorized(black_box(&q.request), &cedar.set, &q.entities));
                }
            })
        });
        group.finish();
    }
    criterion.final_summary();
    report(n);
}

/// Median ns per decision from criterion's estimates, and the ratios to Cedar.
fn report(n: usize) {
    let median = |id: &str| -> Option<f64> {
        let path = format!("target/criterion/{GROUP}/{id}/new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(v["median"]["point_estimate"].as_f64()? / n as f64)
    };
    let (Some(compiled), Some(interpreter), Some(cedar)) = (median("compiled"), median("interpreter"), median("cedar"))
    else {
        println!("(no criterion estimates under target/criterion: run without --test to get the table)");
        return;
    };
    println!("\n| evaluator | median ns/decision | decisions/s | vs Cedar |");
    println!("|---|---:|---:|---:|");
    for (name, ns) in [("compiled", compiled), ("interpreter", interpreter), ("cedar-policy", cedar)] {
        println!("| {name} | {ns:.1} | {:.0} | {:.1}× |", 1e9 / ns, cedar / ns);
    }
    println!(
        "POLICY compiled_ns={compiled:.1} interpreter_ns={interpreter:.1} cedar_ns={cedar:.1} compiled_vs_cedar={:.1}",
        cedar / compiled
    );
}
