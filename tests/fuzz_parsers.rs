//! Property-based fuzzing (stable Rust, proptest) of every parser of outside input: `.npy`
//! arrays, WAV files, safetensors headers and tensor tables (through `Weights::open` and the
//! tensor accessors), `config.json` (CSM and Mimi), the `say --context` file, and the control
//! socket's request lines. Inputs are generated near the valid formats (well-formed files
//! with random fields, then byte flips, boundary integers written over size fields, cuts and
//! insertions), so the checks reach deep into each parser.
//!
//! The invariant for every input: an `Ok` or an `Err` (a one-line message naming the file),
//! never a panic, an abort, or a single allocation larger than twice the input plus 1 MiB
//! (measured by the counting allocator on the test's thread).
//!
//! Case counts are sized for CI (all of them within about 20 s on one core);
//! `EDGECSM_FUZZ_SCALE=N` multiplies them, and `tools/fuzz.sh --minutes M` repeats runs with
//! fresh random seeds for as long as asked (`PROPTEST_RNG_SEED` replays a seed).

mod counting_alloc;

use edgecsm::audio::npy::{parse_i64, read_codes};
use edgecsm::audio::wav::parse_mono;
use edgecsm::csm::CsmConfig;
use edgecsm::csm::context_file::parse_context;
use edgecsm::daemon::protocol::{self, Line, LineReader};
use edgecsm::mimi::MimiConfig;
use edgecsm::weights::Weights;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use std::path::Path;

/// Cases for a parser: `base` times `EDGECSM_FUZZ_SCALE` (default 1); a twentieth of that
/// under emulation (`cross/test.sh` runs every test binary under qemu, unoptimized, for three
/// CPUs: the parsers are the same code on every CPU).
fn cases(base: u32) -> ProptestConfig {
    let scale = std::env::var("EDGECSM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let emulated = std::env::var_os("EDGECSM_TEST_RUNNER").is_some_and(|r| !r.is_empty());
    let base = if emulated { (base / 20).max(50) } else { base };
    ProptestConfig {
        cases: base.saturating_mul(scale),
        max_shrink_iters: 2000,
        // a failing input found once is replayed first on every later run
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

/// Runs `f` and checks that no single allocation on this thread exceeded twice `input` bytes
/// plus 1 MiB.
fn bounded<T>(input: usize, what: &str, f: impl FnOnce() -> T) -> T {
    counting_alloc::reset_largest();
    let out = f();
    let big = counting_alloc::largest();
    assert!(
        big <= 2 * input + (1 << 20),
        "{what}: a single allocation of {big} bytes for {input} bytes of input"
    );
    out
}

/// An error message must be one line naming `file`.
fn one_line_naming(e: &impl std::fmt::Display, file: &str) {
    let m = e.to_string();
    assert!(!m.contains('\n'), "not one line: {m:?}");
    assert!(m.contains(file), "does not name {file}: {m}");
}

// ---- byte-level mutations ------------------------------------------------------------------

/// Integers that make size fields interesting.
fn boundary_int() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            2,
            3,
            4,
            7,
            8,
            16,
            0x7F,
            0x80,
            0xFF,
            0x7FFF,
            0xFFFF,
            0x7FFF_F000,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFF,
            1 << 32,
            1 << 40,
            1 << 62,
            u64::MAX / 2,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(Index, u8),
    /// A little-endian integer of 2, 4 or 8 bytes written over the bytes at the index.
    Int(Index, u64, u8),
    Cut(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        3 => (any::<Index>(), boundary_int(), prop::sample::select(vec![2u8, 4, 8]))
            .prop_map(|(i, v, w)| Mutation::Int(i, v, w)),
        1 => any::<Index>().prop_map(Mutation::Cut),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        match m {
            Mutation::Set(i, v) if !b.is_empty() => {
                let k = i.index(b.len());
                b[k] = *v;
            }
            Mutation::Int(i, v, w) if b.len() >= *w as usize => {
                let w = *w as usize;
                let k = i.index(b.len() - w + 1);
                b[k..k + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            Mutation::Cut(i) => {
                let k = i.index(b.len() + 1);
                b.truncate(k);
            }
            Mutation::Insert(i, v) => {
                let k = i.index(b.len() + 1);
                b.splice(k..k, v.iter().copied());
            }
            Mutation::Delete(i, n) if !b.is_empty() => {
                let k = i.index(b.len());
                let e = (k + *n as usize).min(b.len());
                b.drain(k..e);
            }
            _ => {}
        }
    }
    b
}

/// `base` with up to `n` mutations (none a third of the time).
fn mutated(base: impl Strategy<Value = Vec<u8>>, n: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        base,
        prop_oneof![
            1 => Just(Vec::new()),
            2 => prop::collection::vec(mutation(), 1..=n),
        ],
    )
        .prop_map(|(b, ms)| apply(b, &ms))
}

// ---- .npy --------------------------------------------------------------------------------

fn npy_dim() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..6, 1 => boundary_int()]
}

fn npy_file() -> impl Strategy<Value = Vec<u8>> {
    let descr = prop_oneof![
        4 => Just("<i8".to_string()),
        1 => Just(">i8".to_string()),
        1 => prop::sample::select(vec!["<f4", "|u1", "<i4", "i8", "", "<i8<i8"]).prop_map(String::from),
        1 => "[ -~]{0,8}",
    ];
    let shape = prop::collection::vec(npy_dim(), 0..4);
    let version = prop_oneof![6 => Just(1u8), 2 => 2u8..=3, 1 => Just(4u8)];
    (
        descr,
        any::<bool>(),
        shape,
        version,
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(descr, fortran, shape, version, py2, junk, consistent)| {
            let dims: Vec<String> = shape
                .iter()
                .map(|d| if py2 { format!("{d}L") } else { d.to_string() })
                .collect();
            let shape_text = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.join(", ")),
            };
            let f = if fortran { "True" } else { "False" };
            let mut h =
                format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape_text}, }}");
            h.push('\n');
            let mut v = b"\x93NUMPY".to_vec();
            v.push(version);
            v.push(0);
            if version == 1 {
                v.extend((h.len() as u16).to_le_bytes());
            } else {
                v.extend((h.len() as u32).to_le_bytes());
            }
            v.extend(h.as_bytes());
            // the data the shape asks for when it is small, else some bytes
            let n: Option<u64> = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            match n {
                Some(n) if consistent && n <= 64 => {
                    for i in 0..n {
                        v.extend((i as i64 - 3).to_le_bytes());
                    }
                }
                _ => v.extend(junk),
            }
            v
        })
}

proptest! {
    #![proptest_config(cases(60000))]

    #[test]
    fn npy_never_panics_or_overallocates(
        bytes in prop_oneof![
            8 => mutated(npy_file(), 4),
            1 => prop::collection::vec(any::<u8>(), 0..300),
            1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|mut v| {
                let mut b = b"\x93NUMPY\x01\x00".to_vec();
                b.append(&mut v);
                b
            }),
        ]
    ) {
        let r = bounded(bytes.len(), "npy", || parse_i64(&bytes, "codes"));
        if let Ok(a) = r {
            prop_assert_eq!(a.len() * 8 + 10 <= bytes.len(), true);
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn npy_files_name_themselves_in_errors(bytes in mutated(npy_file(), 3)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fuzz-codes.npy");
        std::fs::write(&p, &bytes).unwrap();
        if let Err(e) = bounded(bytes.len(), "read_codes", || read_codes(&p)) {
            one_line_naming(&e, "fuzz-codes.npy");
        }
    }
}

// ---- WAV ---------------------------------------------------------------------------------

fn chunk(id: &[u8], body: &[u8], size: Option<u32>) -> Vec<u8> {
    let mut v = id.to_vec();
    v.extend(size.unwrap_or(body.len() as u32).to_le_bytes());
    v.extend(body);
    if body.len() % 2 == 1 {
        v.push(0);
    }
    v
}

fn wav_file() -> impl Strategy<Value = Vec<u8>> {
    // (format tag, subformat of an extensible header, bits): mostly valid combinations
    let format = prop_oneof![
        8 => prop::sample::select(vec![
            (1u16, 0u16, 8u16),
            (1, 0, 16),
            (1, 0, 24),
            (1, 0, 32),
            (3, 0, 32),
            (3, 0, 64),
            (0xFFFE, 1, 16),
            (0xFFFE, 1, 24),
            (0xFFFE, 3, 32),
        ]),
        1 => (
            prop::sample::select(vec![1u16, 3, 0xFFFE, 2, 0x55]),
            prop::sample::select(vec![1u16, 3, 2]),
            prop::sample::select(vec![0u16, 8, 12, 16, 24, 32, 40, 64]),
        ),
    ];
    let channels = prop_oneof![8 => 1u16..4, 1 => any::<u16>()];
    let rate = prop_oneof![
        6 => prop::sample::select(vec![8000u32, 16000, 24000, 44100, 48000]),
        1 => any::<u32>(),
    ];
    let data = prop::collection::vec(any::<u8>(), 0..400);
    let data_size = prop_oneof![
        8 => Just(None),
        1 => prop::sample::select(vec![0u32, 1, 0x7FFF_FFFF, 0x7FFF_F000, 0xFFFF_FFFF]).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ];
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec![
                *b"LIST", *b"fact", *b"junk", *b"LIST", *b"fmt ", *b"data",
            ]),
            prop::collection::vec(any::<u8>(), 0..20),
        ),
        0..3,
    );
    (
        (format, channels, rate),
        prop::bool::weighted(0.85),
        data,
        data_size,
        extra,
        any::<bool>(),
    )
        .prop_map(
            |(((tag, sub, bits), ch, rate), consistent, data, size, extra, extra_first)| {
                let container = (bits as u32).div_ceil(8).max(1);
                let align = if consistent {
                    (container * ch as u32) as u16
                } else {
                    bits.wrapping_mul(ch)
                };
                let mut fmt = Vec::new();
                fmt.extend(tag.to_le_bytes());
                fmt.extend(ch.to_le_bytes());
                fmt.extend(rate.to_le_bytes());
                fmt.extend(rate.wrapping_mul(align as u32).to_le_bytes());
                fmt.extend(align.to_le_bytes());
                fmt.extend(bits.to_le_bytes());
                if tag == 0xFFFE {
                    fmt.extend(22u16.to_le_bytes());
                    fmt.extend(bits.to_le_bytes());
                    fmt.extend(0u32.to_le_bytes());
                    fmt.extend(sub.to_le_bytes());
                    fmt.extend([
                        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38,
                        0x9B, 0x71,
                    ]);
                }
                let mut body = Vec::new();
                let extras: Vec<u8> = extra
                    .iter()
                    .flat_map(|(id, b)| chunk(id, b, None))
                    .collect();
                if extra_first {
                    body.extend(&extras);
                }
                body.extend(chunk(b"fmt ", &fmt, None));
                body.extend(chunk(b"data", &data, size));
                if !extra_first {
                    body.extend(&extras);
                }
                let mut v = b"RIFF".to_vec();
                v.extend((body.len() as u32 + 4).to_le_bytes());
                v.extend(b"WAVE");
                v.extend(body);
                v
            },
        )
}

proptest! {
    #![proptest_config(cases(60000))]

    #[test]
    fn wav_never_panics_or_overallocates(
        bytes in prop_oneof![
            8 => mutated(wav_file(), 4),
            1 => prop::collection::vec(any::<u8>(), 0..300),
        ]
    ) {
        if let Ok(c) = bounded(bytes.len(), "wav", || parse_mono(&bytes)) {
            prop_assert!(!c.samples.is_empty() && c.samples.len() <= bytes.len());
            prop_assert!(c.samples.iter().all(|v| v.is_finite()));
            prop_assert!(c.channels > 0 && c.sample_rate > 0);
        }
    }
}

// ---- safetensors -------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct StTensor {
    name: String,
    dtype: String,
    shape: Vec<u64>,
}

fn st_dtype() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => prop::sample::select(vec![
            "F32", "F32", "F16", "BF16", "I8", "I8", "I64", "U8", "F64", "BOOL", "F8_E4M3", "F4",
            "I32",
        ]).prop_map(String::from),
        1 => "[A-Z0-9_]{0,6}",
    ]
}

fn st_tensor() -> impl Strategy<Value = StTensor> {
    (
        prop_oneof![
            6 => prop::sample::select(vec![
                "w", "w.q8_scale", "a.weight", "a.weight.q8_scale", "norm.weight", "b", "",
            ]).prop_map(String::from),
            1 => "[a-z._]{0,12}",
        ],
        st_dtype(),
        prop::collection::vec(prop_oneof![12 => 0u64..40, 1 => boundary_int()], 0..4),
    )
        .prop_map(|(name, dtype, shape)| StTensor { name, dtype, shape })
}

fn dtype_bits(d: &str) -> u64 {
    match d {
        "F64" | "I64" => 64,
        "F32" | "I32" => 32,
        "F16" | "BF16" => 16,
        "F4" => 4,
        _ => 8,
    }
}

fn st_file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(st_tensor(), 0..6).prop_map(|mut v| {
            // Q8 pairs: an int8 matrix with its f16 scales, shaped to match
            if let [a, b, ..] = &mut v[..]
                && a.name == "w"
            {
                let rows = a.shape.first().copied().unwrap_or(1) % 8;
                let nb = a.shape.get(1).copied().unwrap_or(1) % 3;
                a.dtype = "I8".into();
                a.shape = vec![rows, nb * 32];
                b.name = "w.q8_scale".into();
                b.dtype = "F16".into();
                b.shape = vec![rows, nb];
            }
            v
        }),
        prop_oneof![
            6 => Just(None),
            2 => Just(Some(json!({"format": "edgecsm"}))),
            3 => prop::collection::vec(prop_oneof![6 => 0u64..70, 1 => boundary_int()], 0..3)
                .prop_map(|s| Some(json!({"format": "edgecsm",
                    "q8_shapes": json!({"w": s.clone(), "a.weight": s}).to_string()}))),
            1 => Just(Some(json!({"q8_shapes": "{not json"}))),
            1 => Just(Some(json!({"n": 3}))),
        ],
        prop::bool::weighted(0.85),
        prop::collection::vec(any::<u8>(), 0..64),
        0usize..8,
    )
        .prop_map(|(tensors, meta, consistent, junk, pad)| {
            let mut header = serde_json::Map::new();
            if let Some(m) = meta {
                header.insert("__metadata__".into(), m);
            }
            let mut off = 0u64;
            let mut data = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, t) in tensors.iter().enumerate() {
                // a repeated name would replace the earlier entry, leaving a gap in the data
                let mut t = t.clone();
                if !seen.insert(t.name.clone()) {
                    t.name = format!("{}_{i}", t.name);
                    seen.insert(t.name.clone());
                }
                let bytes = t
                    .shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .and_then(|n| n.checked_mul(dtype_bits(&t.dtype)))
                    .map(|b| b / 8);
                let len = match bytes {
                    Some(b) if consistent && b <= 4096 => b,
                    _ => (i as u64 * 7) % 40,
                };
                header.insert(
                    t.name.clone(),
                    json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + len]}),
                );
                // values that are mostly small floats, with the odd NaN pattern
                data.extend((0..len).map(|k| {
                    if k % 4 == 3 {
                        0x3f
                    } else {
                        (k * 31 % 251) as u8
                    }
                }));
                off += len;
            }
            let mut h = Value::Object(header).to_string().into_bytes();
            h.extend(std::iter::repeat_n(b' ', pad));
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend(h);
            v.extend(data);
            if !consistent {
                v.extend(junk);
            }
            v
        })
}

/// Opens `bytes` as a model file and reads every tensor every way it can be read.
fn exercise_weights(path: &Path, len: usize) {
    let r = bounded(len, "safetensors", || {
        let w = Weights::open(path)?;
        for n in w.names() {
            let info = w.info(&n);
            let shape = info.map(|i| i.shape).unwrap_or_default();
            let _ = w.vector(&n, &shape).map(|t| t.len());
            let _ = w.vector_as_stored(&n).map(|t| t.len());
            if let Ok(m) = w.matrix(&n, &shape)
                && m.rows() > 0
                && m.cols() > 0
            {
                // (a [0, huge] or [huge, 0] matrix holds no data: reading it row by row
                // would be a huge row or a huge loop of the harness's own making)
                let mat = m.mat();
                let mut row = vec![0f32; m.cols()];
                for r in 0..m.rows() {
                    mat.row_into(r, &mut row);
                }
            }
        }
        Ok::<_, edgecsm::Error>(())
    });
    if let Err(e) = r {
        one_line_naming(&e, "fuzz.safetensors");
    }
}

proptest! {
    #![proptest_config(cases(12000))]

    #[test]
    fn safetensors_never_panic_or_overallocate(
        bytes in prop_oneof![
            8 => mutated(st_file(), 3),
            1 => prop::collection::vec(any::<u8>(), 0..200),
        ]
    ) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fuzz.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        exercise_weights(&p, bytes.len());
    }
}

// ---- config.json -------------------------------------------------------------------------

fn fixture_json(path: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Every JSON pointer in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        boundary_int().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            0.0f64,
            -0.0,
            0.5,
            -1.0,
            1e-300,
            1e300,
            1.7976931348623157e308,
            4.6e18,
            2048.5,
        ])
        .prop_map(Value::from),
        (-100i64..100).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "default", "llama3", "silu", "gelu", "constant", "mimi", "csm"
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Clone, Debug)]
enum JsonEdit {
    Replace(Index, Value),
    Remove(Index),
}

fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    prop::collection::vec(
        prop_oneof![
            4 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
            1 => any::<Index>().prop_map(JsonEdit::Remove),
        ],
        1..4,
    )
}

fn edit_json(mut v: Value, edits: &[JsonEdit]) -> Value {
    for e in edits {
        let mut ps = Vec::new();
        pointers(&v, String::new(), &mut ps);
        if ps.is_empty() {
            break;
        }
        match e {
            JsonEdit::Replace(i, x) => {
                if let Some(slot) = v.pointer_mut(&ps[i.index(ps.len())]) {
                    *slot = x.clone();
                }
            }
            JsonEdit::Remove(i) => {
                let p = &ps[i.index(ps.len())];
                let (parent, key) = p.rsplit_once('/').unwrap();
                let parent = if parent.is_empty() {
                    Some(&mut v)
                } else {
                    v.pointer_mut(parent)
                };
                if let Some(Value::Object(m)) = parent {
                    m.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
            }
        }
    }
    v
}

/// The fixture config at `path` with `edits` applied, or `garbage` instead.
fn config_text(path: &str, edits: &[JsonEdit], garbage: Option<String>) -> String {
    garbage.unwrap_or_else(|| edit_json(fixture_json(path), edits).to_string())
}

proptest! {
    #![proptest_config(cases(20000))]

    #[test]
    fn csm_config_never_panics_or_overallocates(
        edits in json_edits(),
        garbage in prop::option::weighted(0.1, "[ -~]{0,80}"),
    ) {
        let text = config_text("tests/fixtures/csm/a/config.json", &edits, garbage);
        let r = bounded(text.len(), "csm config", || CsmConfig::parse(&text, Path::new("fuzz-config.json")));
        if let Err(e) = r {
            one_line_naming(&e, "fuzz-config.json");
        }
    }

    #[test]
    fn mimi_config_never_panics_or_overallocates(
        edits in json_edits(),
        garbage in prop::option::weighted(0.1, "[ -~]{0,80}"),
    ) {
        let text = config_text("tests/fixtures/mimi/b/config.json", &edits, garbage);
        let r = bounded(text.len(), "mimi config", || MimiConfig::parse(&text, Path::new("fuzz-config.json")));
        if let Err(e) = r {
            one_line_naming(&e, "fuzz-config.json");
        }
    }
}

// ---- the say --context file ---------------------------------------------------------------

fn context_turn() -> impl Strategy<Value = Value> {
    let speaker = prop_oneof![
        12 => (0u64..4).prop_map(Value::from),
        1 => prop::sample::select(vec!["1", "", "alice", "-1", "99999999999"]).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let file = prop_oneof![
        12 => prop::sample::select(vec!["a.wav", "b.npy", "a.wav", "missing.wav", "", "../a.wav", "/"]).prop_map(Value::from),
        1 => json_leaf(),
    ];
    (
        speaker,
        prop_oneof![12 => "[ -~]{0,12}".prop_map(Value::from), 1 => json_leaf()],
        prop::option::weighted(0.6, file.clone()),
        prop::option::weighted(0.4, file),
        prop::option::weighted(0.05, ("[a-z]{1,6}", json_leaf())),
    )
        .prop_map(|(speaker, text, audio, codes, extra)| {
            let mut m = serde_json::Map::new();
            m.insert("speaker".into(), speaker);
            m.insert("text".into(), text);
            if let Some(a) = audio {
                m.insert("audio".into(), a);
            }
            if let Some(c) = codes {
                m.insert("codes".into(), c);
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(cases(12000))]

    #[test]
    fn context_files_never_panic_or_overallocate(
        text in prop_oneof![
            6 => prop::collection::vec(context_turn(), 0..4).prop_map(|t| Value::from(t).to_string()),
            1 => json_value().prop_map(|v| v.to_string()),
            1 => "[ -~]{0,60}",
        ]
    ) {
        // one directory for every case, holding the files the turns may name
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let d = DIR.get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("a.wav"), b"x").unwrap();
            std::fs::write(d.path().join("b.npy"), b"x").unwrap();
            d
        });
        let path = d.path().join("fuzz-context.json");
        match bounded(text.len(), "context", || parse_context(&text, &path)) {
            Ok(turns) => prop_assert!(turns.len() <= text.len()),
            Err(e) => one_line_naming(&e, "fuzz-context.json"),
        }
    }
}

// ---- control socket lines ------------------------------------------------------------------

fn request_line() -> impl Strategy<Value = Vec<u8>> {
    let op = prop_oneof![
        4 => prop::sample::select(vec!["say", "stop", "status", "reset"]).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec![0i64, 1, 2, 50]).prop_map(Value::from),
        2 => "[ -~]{1,12}".prop_map(Value::from),
        1 => json_leaf(),
    ];
    let fields = prop::collection::btree_map(
        prop::sample::select(vec![
            "text",
            "text",
            "speaker",
            "max_seconds",
            "temperature",
            "top_k",
            "seed",
            "voice",
        ]),
        value,
        0..4,
    );
    prop_oneof![
        6 => (op, fields).prop_map(|(op, f)| {
            let mut m: serde_json::Map<String, Value> =
                f.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            m.insert("op".into(), op);
            Value::Object(m).to_string().into_bytes()
        }),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..80),
        1 => prop::sample::select(vec!["", " ", "\t\r", "{}", "null"]).prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// A reader handing out the bytes in the given chunk sizes.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    k: usize,
}

impl std::io::Read for Chunked {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let step = self
            .sizes
            .get(self.k % self.sizes.len().max(1))
            .copied()
            .unwrap_or(7);
        self.k += 1;
        let n = step.max(1).min(out.len()).min(self.data.len() - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

proptest! {
    #![proptest_config(cases(30000))]

    #[test]
    fn request_lines_always_get_an_answer(line in mutated(request_line(), 2)) {
        let r = bounded(line.len(), "request", || protocol::parse(&line));
        if let Err(m) = r {
            prop_assert!(!m.is_empty());
            // the reply the client gets is one JSON line
            let reply = protocol::error(&m);
            prop_assert!(!reply.contains('\n'));
        }
    }

    #[test]
    fn line_reader_splits_any_stream(
        lines in prop::collection::vec(request_line(), 0..8),
        sizes in prop::collection::vec(1usize..40, 1..5),
        cap in 2usize..64,
    ) {
        let mut data = Vec::new();
        for l in &lines {
            data.extend(l.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
            data.push(b'\n');
        }
        let total = data.len();
        let mut r = LineReader::with_capacity(Chunked { data, at: 0, sizes, k: 0 }, cap);
        let mut seen = 0;
        loop {
            match r.next_line().unwrap() {
                Line::Text(t) => prop_assert!(t.len() < cap),
                Line::TooLong => {}
                Line::Eof => break,
            }
            seen += 1;
            prop_assert!(seen <= total + 1, "more lines than bytes");
        }
        prop_assert!(seen >= lines.len().min(1) || lines.is_empty());
    }
}
