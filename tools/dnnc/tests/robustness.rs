//! No input makes dnnc panic: every prefix of every lit-test input and model (cut at each
//! token boundary) and thousands of seeded mutations of them go through the frontend, the
//! verifier and, when valid and small, `canonicalize,dce` and the printer. Every invalid
//! input must produce at least one diagnostic.

use dnnc_ir::diag::SourceFile;
use dnnc_passes::{PassManager, PassRegistry, manager::NoInstrumentation};
use std::path::{Path, PathBuf};

fn corpus() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = dnnc_lit::discover(&root.join("lit-tests"));
    files.extend(dnnc_lit::discover(&root.join("models")));
    assert!(
        files.len() >= 40,
        "expected the lit tests and models, found {} files",
        files.len()
    );
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// Runs one input through everything; panics (failing the test) on a panic inside, or if
/// an invalid input yields no diagnostic.
fn exercise(name: &str, text: &str) {
    let file = SourceFile::new(name, text);
    let outcome = std::panic::catch_unwind(|| match dnnc_frontend::parse(&file, 0..text.len()) {
        Err(diags) => assert!(!diags.is_empty(), "a rejected input must say why"),
        Ok(mut module) => {
            let problems = dnnc_ir::verify::verify_module(&module);
            if !problems.is_empty() {
                return;
            }
            let printed = dnnc_ir::printer::print_module(&module);
            let again = SourceFile::new("printed", printed.as_str());
            let reparsed = dnnc_frontend::parse_and_verify(&again, 0..printed.len())
                .unwrap_or_else(|d| panic!("printed module does not parse back: {d:?}\n{printed}"));
            assert_eq!(dnnc_ir::printer::print_module(&reparsed), printed);
            let weight_bytes: usize = module.weights.values().map(|w| w.ty.size_bytes()).sum();
            if weight_bytes < (64 << 20) {
                let passes = PassRegistry::with_builtin()
                    .build("canonicalize,dce")
                    .unwrap();
                let (_, result) = PassManager::new(passes).run(&mut module, &mut NoInstrumentation);
                if let Err(failure) = result {
                    assert!(!failure.errors.is_empty());
                }
            }
        }
    });
    if let Err(e) = outcome {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        panic!(
            "input {name} made dnnc panic: {}\n--- input ---\n{text}",
            msg.unwrap_or_default()
        );
    }
}

#[test]
fn every_prefix_at_token_boundaries() {
    let mut count = 0;
    // Large models would make this quadratic; the lit tests and small models cover the syntax.
    for (path, text) in corpus().into_iter().filter(|(_, t)| t.len() < 8192) {
        let mut cuts: Vec<usize> = dnnc_frontend::lexer::lex(&text, 0)
            .iter()
            .flat_map(|(l, _, r)| [*l, *r])
            .collect();
        cuts.dedup();
        for cut in cuts {
            exercise(&format!("{}[..{cut}]", path.display()), &text[..cut]);
            count += 1;
        }
    }
    assert!(count > 5000, "only {count} prefixes");
}

/// xorshift64*: a tiny seeded generator, so that failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SNIPPETS: &[&str] = &[
    "%",
    "@",
    "#",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    "(",
    ")",
    ",",
    ":",
    "=",
    "->",
    "\"",
    "-1",
    "0",
    "4294967296",
    "99999999999999999999",
    "1e309",
    "nan",
    "inf",
    "tensor<",
    "x0xf32",
    "9x9x9x9x9x9x9x9xf32",
    "dense<",
    "0x",
    "#bcr<block = [0, 0]>",
    "#csr",
    "dnn.conv2d",
    "dnn.weight",
    "dnn.lstm",
    "return",
    "func.func",
    "module",
    "// -----\n",
    "\n",
    " ",
    "é",
    "[[[[[[[[",
    "{groups = 0}",
    "{stride = [0, 0]}",
    "loc(\"n\")",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                let len = 1 + rng.below(8);
                let end = (at + len).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 | 2 => {
                let s = SNIPPETS[rng.below(SNIPPETS.len())];
                chars.splice(at..at, s.chars());
            }
            3 if !chars.is_empty() => {
                let i = at.min(chars.len() - 1);
                chars[i] = char::from(b' ' + rng.below(95) as u8);
            }
            _ => {
                // Duplicate a line somewhere else.
                let lines: Vec<String> = chars
                    .iter()
                    .collect::<String>()
                    .lines()
                    .map(str::to_string)
                    .collect();
                if lines.is_empty() {
                    continue;
                }
                let line = lines[rng.below(lines.len())].clone();
                let mut out = lines;
                let pos = rng.below(out.len() + 1);
                out.insert(pos, line);
                chars = out.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn seeded_mutations() {
    let corpus = corpus();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..4000 {
        let (path, text) = &corpus[rng.below(corpus.len())];
        let mutated = mutate(&mut rng, text);
        exercise(&format!("mutation #{i} of {}", path.display()), &mutated);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = format!(
        "dnn.weight @w : tensor<1xf32> = dense<{}1.0{}>",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let file = SourceFile::new("deep.dnn", text.as_str());
    let err = dnnc_frontend::parse(&file, 0..text.len()).unwrap_err();
    assert!(err[0].message.contains("nest deeper than"), "{:?}", err[0]);
}
