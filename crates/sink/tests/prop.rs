//! Property tests over the frame decoder, line reassembly and JSON output.
//!
//! The case count defaults to a few thousand per property so the suite
//! stays quick; run longer with
//! `PROPTEST_CASES=100000 cargo test -p logtap-sink --release --test prop`.

mod common;

use logtap_sink::lines::{Line, LineBuffers, MAX_SOURCES};
use logtap_sink::output::{
    write_base64, write_json_string, write_text, Clock, Format, Origin, Output,
};
use logtap_sink::stream::FrameStream;
use logtap_wire::{encode, Decoder, Level, HEADER_LEN, MAX_LEN};
use proptest::prelude::*;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const SOURCES: [&[u8]; 3] = [b"stdout", b"stderr", b"var/log/app.log"];

/// Frame data drawn mostly from a few bytes, newlines frequent.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => Just(b'\n'), 8 => b'a'..=b'e', 1 => Just(b'\r'), 1 => Just(0xffu8), 1 => any::<u8>()],
        0..40,
    )
}

fn frames() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    prop::collection::vec((0..SOURCES.len(), data()), 0..30)
}

/// The lines a source's concatenated data must produce: split at `\n`,
/// every line cut into `max`-byte pieces (all but the last partial), and a
/// non-empty unterminated tail as a last line.
fn reference(data: &[u8], max: usize) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut piece = |line: &[u8]| {
        let mut rest = line;
        while rest.len() > max {
            out.push((rest[..max].to_vec(), true));
            rest = &rest[max..];
        }
        out.push((rest.to_vec(), false));
    };
    for p in parts {
        piece(p);
    }
    if !tail.is_empty() {
        piece(tail);
    }
    out
}

/// Cuts `bytes` into chunks of the given sizes (cycled).
fn chunks<'a>(bytes: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    let mut at = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1)
            .min(bytes.len() - at);
        i += 1;
        let c = &bytes[at..at + n];
        at += n;
        Some(c)
    })
}

proptest! {
    #![proptest_config(config(4000))]

    /// Frames cut at arbitrary points: the decoder and line buffers emit
    /// exactly the reference lines of each source, in order.
    #[test]
    fn reassembly_matches_reference(fr in frames(), cuts in prop::collection::vec(1usize..60, 1..8), max in 1usize..24) {
        let stream: Vec<u8> = fr.iter().flat_map(|(s, d)| encode(Level::Info, b"p", SOURCES[*s], d)).collect();
        let mut dec = Decoder::new();
        let mut lb = LineBuffers::new(max);
        let mut got: Vec<Vec<(Vec<u8>, bool)>> = vec![Vec::new(); SOURCES.len()];
        let mut emit = |l: Line<'_>| {
            let i = SOURCES.iter().position(|s| *s == l.source).expect("known source");
            assert!(l.text.len() <= max);
            assert!(!l.text.contains(&b'\n'));
            got[i].push((l.text.to_vec(), l.partial));
        };
        for c in chunks(&stream, &cuts) {
            dec.feed(c, |f| lb.push(f.level, f.platform, f.source, None, f.data, &mut emit)).unwrap();
            prop_assert!(lb.pending() <= SOURCES.len() * max);
        }
        prop_assert!(!dec.is_mid_frame());
        lb.flush(&mut emit);
        for (i, src) in SOURCES.iter().enumerate() {
            let all: Vec<u8> = fr.iter().filter(|(s, _)| SOURCES[*s] == *src).flat_map(|(_, d)| d.clone()).collect();
            prop_assert_eq!(&got[i], &reference(&all, max));
        }
    }

    /// Shedding partial lines at arbitrary moments (as the sink does over
    /// its memory budget) splits lines but loses and duplicates nothing.
    #[test]
    fn shedding_loses_nothing(fr in frames(), sheds in prop::collection::vec(any::<bool>(), 0..30), max in 1usize..24) {
        let mut lb = LineBuffers::new(max);
        let mut got: Vec<Vec<u8>> = vec![Vec::new(); SOURCES.len()];
        let mut mid = vec![false; SOURCES.len()];
        let mut emit = |l: Line<'_>| {
            let i = SOURCES.iter().position(|s| *s == l.source).expect("known source");
            // A piece continues a line exactly when the last piece of its
            // source was partial (shedding included): only line starts
            // are looked at by --level-prefix.
            assert_eq!(l.cont, mid[i], "continuation mark");
            mid[i] = l.partial;
            got[i].extend_from_slice(l.text);
            if !l.partial {
                got[i].push(b'\n');
            }
        };
        for (k, (s, d)) in fr.iter().enumerate() {
            lb.push(3, b"p", SOURCES[*s], None, d, &mut emit);
            if sheds.get(k).copied().unwrap_or(false) {
                lb.shed(&mut emit);
                // No line data stays; only the names of a source in
                // mid-line (to know its next piece is a continuation).
                prop_assert_eq!(lb.pending(), 0);
                prop_assert!(lb.memory() <= 1024, "{}", lb.memory());
            }
        }
        lb.flush(&mut emit);
        for (i, src) in SOURCES.iter().enumerate() {
            let all: Vec<u8> = fr.iter().filter(|(s, _)| SOURCES[*s] == *src).flat_map(|(_, d)| d.clone()).collect();
            // An unterminated tail ends as a final line (a newline added
            // here) unless it was shed last (then its piece is partial).
            let mut mine = got[i].clone();
            if all.last() != Some(&b'\n') && mine.last() == Some(&b'\n') {
                mine.pop();
            }
            got[i] = mine;
            prop_assert_eq!(&got[i], &all);
        }
    }

    /// The same through the whole pipeline to JSON: every output line
    /// parses, and the bytes (via message_base64 when needed) round-trip.
    #[test]
    fn json_pipeline_is_lossless(fr in frames(), cuts in prop::collection::vec(1usize..60, 1..8), max in 1usize..24) {
        let stream: Vec<u8> = fr.iter().flat_map(|(s, d)| encode(Level::Warn, b"p", SOURCES[*s], d)).collect();
        let mut out = Output::new(Format::Json, &[], Vec::new());
        let mut fs = FrameStream::new(max);
        let origin = Origin::peer(Clock::new().now(), Some(7), Some(0));
        for c in chunks(&stream, &cuts) {
            fs.feed(c, &origin, &mut out).unwrap();
        }
        prop_assert_eq!(fs.finish(&origin, &mut out), 0);
        out.flush().unwrap();
        let text = std::str::from_utf8(out.get_ref()).unwrap();
        let mut got: Vec<Vec<(Vec<u8>, bool)>> = vec![Vec::new(); SOURCES.len()];
        for line in text.lines() {
            let v = common::parse(line);
            prop_assert_eq!(&v["level"], "WARN");
            prop_assert_eq!(&v["pid"], 7);
            let i = SOURCES.iter().position(|s| v["source"] == std::str::from_utf8(s).unwrap()).unwrap();
            got[i].push((common::message_bytes(&v), v.get("partial").is_some()));
        }
        for (i, src) in SOURCES.iter().enumerate() {
            let all: Vec<u8> = fr.iter().filter(|(s, _)| SOURCES[*s] == *src).flat_map(|(_, d)| d.clone()).collect();
            prop_assert_eq!(&got[i], &reference(&all, max));
        }
    }

    /// Arbitrary garbage never panics, and memory stays within what
    /// arrived (never what a header claims).
    #[test]
    fn garbage_is_survived(bytes in prop::collection::vec(any::<u8>(), 0..3000), cuts in prop::collection::vec(1usize..500, 1..6)) {
        let mut out = Output::new(Format::Json, &[], Vec::new());
        let mut fs = FrameStream::new(64);
        let origin = Origin::peer(Clock::new().now(), None, None);
        let mut fed = 0;
        for c in chunks(&bytes, &cuts) {
            fed += c.len();
            let ok = fs.feed(c, &origin, &mut out).is_ok();
            prop_assert!(fs.memory() <= 2 * fed + 64 * 1024, "memory {} after {} bytes", fs.memory(), fed);
            if !ok {
                break;
            }
        }
        fs.finish(&origin, &mut out);
        out.flush().unwrap();
        for line in std::str::from_utf8(out.get_ref()).unwrap().lines() {
            common::parse(line);
        }
    }

    /// Frames with a valid header and a garbage body get past the header
    /// check; hostile sources and levels exercise the rest.
    #[test]
    fn garbage_bodies_are_survived(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20), cut in 1usize..300) {
        let mut stream = Vec::new();
        for b in &bodies {
            stream.extend_from_slice(&logtap_wire::header(b.len()));
            stream.extend_from_slice(b);
        }
        let mut out = Output::new(Format::Json, &[], Vec::new());
        let mut fs = FrameStream::new(32);
        let origin = Origin::peer(Clock::new().now(), Some(1), Some(0));
        for c in stream.chunks(cut) {
            if fs.feed(c, &origin, &mut out).is_err() {
                break;
            }
            prop_assert!(fs.memory() <= HEADER_LEN + MAX_LEN + MAX_SOURCES * (32 + 512) + 64 * 1024);
        }
        fs.finish(&origin, &mut out);
        out.flush().unwrap();
        for line in std::str::from_utf8(out.get_ref()).unwrap().lines() {
            common::parse(line);
        }
    }

    /// Any bytes become a JSON string that decodes to the lossy text, and
    /// base64 round-trips.
    #[test]
    fn json_strings_and_base64(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut v = Vec::new();
        let lossless = write_json_string(&mut v, &bytes);
        let s: String = serde_json::from_slice(&v).unwrap();
        prop_assert_eq!(s, String::from_utf8_lossy(&bytes).into_owned());
        prop_assert_eq!(lossless, std::str::from_utf8(&bytes).is_ok());
        let mut b = Vec::new();
        write_base64(&mut b, &bytes);
        prop_assert_eq!(common::base64_decode(std::str::from_utf8(&b).unwrap()), bytes.clone());
        let mut t = Vec::new();
        write_text(&mut t, &bytes);
        let t = String::from_utf8(t).unwrap();
        prop_assert!(!t.chars().any(|c| c.is_control()));
        // ChromeOS's rule, written out char by char.
        let mut want = String::new();
        for c in String::from_utf8_lossy(&bytes).chars() {
            let u = c as u32;
            if u < 0x20 || (0x7f..=0x9f).contains(&u) || (0xfdd0..=0xfdef).contains(&u)
                || u & 0xfffe == 0xfffe
            {
                want.push_str(&format!("#{u:03o}"));
            } else {
                want.push(c);
            }
        }
        prop_assert_eq!(t, want);
    }

    /// Scrubbing of text that is mostly valid UTF-8 with the characters
    /// that must change (C1 controls, non-characters) mixed in.
    #[test]
    fn scrub_matches_the_rule(chars in prop::collection::vec(
        prop_oneof![any::<char>(), Just('\u{85}'), Just('\u{FFFE}'), Just('\u{FDD5}'),
                    Just('\u{10FFFF}'), Just('\t'), Just('\u{7f}')], 0..60)) {
        let s: String = chars.into_iter().collect();
        let mut t = Vec::new();
        write_text(&mut t, s.as_bytes());
        let mut want = String::new();
        for c in s.chars() {
            let u = c as u32;
            if u < 0x20 || (0x7f..=0x9f).contains(&u) || (0xfdd0..=0xfdef).contains(&u)
                || u & 0xfffe == 0xfffe
            {
                want.push_str(&format!("#{u:03o}"));
            } else {
                want.push(c);
            }
        }
        prop_assert_eq!(String::from_utf8(t).unwrap(), want);
    }
}
