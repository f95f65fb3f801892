//! `cargo xtask bench scrub`: what the credential scrubber costs per MiB of
//! answer, for plain text, text full of escape marks, and the red team's
//! guess-then-costly-escape text with a right and a wrong guess measured
//! side by side (their ratio must be 1: the scrubber's work must not say
//! how far a guess matched).

use std::{hint::black_box, time::Instant};

use palisade::gateway::spelled::replace;

const SECRET: &[u8] = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const MIB: usize = 1 << 20;

/// An escape costly to read from its start that never closes.
fn heavy() -> String {
    format!("&#x{}&", format!("&#x{}30;", "0".repeat(14)).repeat(16))
}

fn text(unit: &str) -> Vec<u8> {
    unit.repeat(MIB / unit.len() + 1).into_bytes()[..MIB].to_vec()
}

/// Median ms per MiB of each text, measured in interleaved rounds, each
/// round in another order (so that nothing the machine does on a rhythm
/// falls on one text more than another).
fn measure(texts: &[(&str, Vec<u8>)], rounds: usize) -> Vec<f64> {
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); texts.len()];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..rounds {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        for i in (1..order.len()).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for i in order {
            let t = &texts[i].1;
            let started = Instant::now();
            black_box(replace(black_box(t), SECRET, b"[redacted by palisade]"));
            ms[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn main() {
    let right = &SECRET[..SECRET.len() - 1];
    let wrong: Vec<u8> = std::iter::once(b'x')
        .chain(right[1..].iter().copied())
        .collect();
    let as_str = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let texts = vec![
        ("plain text", text("a")),
        (
            "JSON",
            text(r#"{"id":"cus_123","email":"a@b.example","note":"ok\n"},"#),
        ),
        ("`%` repeated", text("%")),
        ("`&` repeated", text("&")),
        (
            "right guess + escape",
            text(&format!("{}{}", as_str(right), heavy())),
        ),
        (
            "wrong guess + escape",
            text(&format!("{}{}", as_str(&wrong), heavy())),
        ),
    ];
    let rounds = 101;
    let ms = measure(&texts, rounds);
    println!(
        "scrubber, {}-byte secret, median of {rounds} interleaved rounds",
        SECRET.len()
    );
    println!("| text | ms per MiB |");
    println!("|---|---|");
    for ((name, _), m) in texts.iter().zip(&ms) {
        println!("| {name} | {m:.2} |");
    }
    println!(
        "right ÷ wrong guess: {:.3} (1.000 means the scrubber's time says nothing)",
        ms[4] / ms[5]
    );
}
