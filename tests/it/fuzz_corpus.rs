//! The fuzz targets' smoke run in the test suite: every seed in `fuzz/corpus/<target>/` and every
//! crash ever found (`fuzz/regressions/<target>/`) goes through exactly the body the fuzzer runs
//! (`carebroker::fuzz_bodies`), then a few thousand seeded mutations of the seeds. A body panics
//! on any input that breaks its invariant; `scripts/fuzz` runs the real coverage-guided fuzzer.

use carebroker::fuzz_bodies::TARGETS;

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.path().display().to_string(), std::fs::read(e.path()).ok()?)))
        .collect();
    out.sort();
    out
}

/// splitmix64, so a failing mutation can be replayed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed with a few bytes flipped, inserted, deleted or duplicated.
fn mutate(seed: &[u8], state: &mut u64) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + next(state) % 4 {
        let at = if data.is_empty() { 0 } else { (next(state) as usize) % data.len() };
        match next(state) % 4 {
            0 if !data.is_empty() => data[at] ^= 1 << (next(state) % 8),
            1 => data.insert(at, b"%=&.,|?/*\"<>{}[]\0\xff"[(next(state) % 18) as usize]),
            2 if !data.is_empty() => {
                data.remove(at);
            }
            _ => {
                let end = (at + 1 + (next(state) as usize) % 16).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
        }
    }
    data
}

#[test]
fn every_seed_every_past_crash_and_seeded_mutations_keep_each_targets_invariant() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut state = 0x00F0_22ED_u64;
    for (name, body) in TARGETS {
        let seeds = files(&root.join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no seed");
        for (file, data) in seeds.iter().chain(files(&root.join("regressions").join(name)).iter()) {
            let run = std::panic::catch_unwind(|| body(data));
            assert!(run.is_ok(), "{name}: {file} breaks the target");
        }
        for i in 0..2000 {
            let seed = &seeds[i % seeds.len()].1;
            let data = mutate(seed, &mut state);
            let run = std::panic::catch_unwind(|| body(&data));
            assert!(run.is_ok(), "{name}: mutation {i} breaks the target: {:?}", String::from_utf8_lossy(&data));
        }
    }
}
