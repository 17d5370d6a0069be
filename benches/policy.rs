//! Policy engine benchmarks: evaluation at 10 to 10,000 rules, loading
//! (parse + validate + lint + compile) of 10,000 rules, and job hashing.
//! Run: cargo bench --bench policy

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gavel::job::{Job, Limits};
use gavel::policy::{self, generate};
use std::hint::black_box;

fn jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            Job::from_json(generate::job_json(i * 7919).as_bytes(), &Limits::default()).unwrap()
        })
        .collect()
}

fn evaluation(c: &mut Criterion) {
    let mut g = c.benchmark_group("evaluate");
    let jobs = jobs(64);
    for rules in [10usize, 100, 1_000, 10_000] {
        let snap = policy::load(&generate::policy_yaml(rules, 42), "generated.yaml")
            .unwrap()
            .snapshot;
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(rules), &snap, |b, snap| {
            b.iter(|| {
                i = (i + 1) % jobs.len();
                black_box(snap.policy.evaluate(black_box(&jobs[i]), Some("agent-1")))
            })
        });
    }
    g.finish();
}

fn loading(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    let yaml = generate::policy_yaml(10_000, 42);
    g.throughput(Throughput::Bytes(yaml.len() as u64));
    g.bench_function("10000-rules", |b| {
        b.iter(|| black_box(policy::load(black_box(&yaml), "generated.yaml").unwrap()))
    });
    // The YAML parser's share of the above.
    g.bench_function("10000-rules-yaml-parse-only", |b| {
        b.iter(|| assert!(policy::parse_only(black_box(&yaml))))
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("job-hash");
    for kib in [1usize, 64] {
        // Params of about `kib` KiB: a list of small objects.
        let items: Vec<String> = (0..kib * 1024 / 64)
            .map(|i| format!(r#"{{"k{i}":"value-{i:0>20}","n":{i},"f":{i}.5}}"#))
            .collect();
        let text = format!(
            r#"{{"topic":"job.deploy.api","action":"deploy","target":"prod-eu","risk_tags":["prod","write"],"params":{{"items":[{}]}}}}"#,
            items.join(",")
        );
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("parse+hash", format!("{kib}KiB")),
            &text,
            |b, text| {
                b.iter(|| {
                    let job =
                        Job::from_json(black_box(text.as_bytes()), &Limits::default()).unwrap();
                    black_box(job.hash())
                })
            },
        );
        let job = Job::from_json(text.as_bytes(), &Limits::default()).unwrap();
        g.bench_with_input(
            BenchmarkId::new("hash", format!("{kib}KiB")),
            &job,
            |b, job| b.iter(|| black_box(job.hash())),
        );
    }
    g.finish();
}

criterion_group!(benches, evaluation, loading, hashing);
criterion_main!(benches);
