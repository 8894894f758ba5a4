//! A lint, run as a test: no `match` over op kinds in the backends, the ONNX importer or
//! the passes ends in a catch-all arm (`_ =>`, or a bare binding such as `other =>`).
//! Matches over ops are exhaustive so that a new op is a compile error in every consumer
//! until it says what the op means there; a catch-all would quietly treat it as some old
//! op (this is how integer division once became the default of an arithmetic match).
//!
//! A match is over op kinds when one of its arms names an `OpKind::` or `NodeKind::`
//! variant. A yes/no question about one variant (`if let`, `matches!`) is not a match and
//! stays allowed.

use std::path::{Path, PathBuf};
use syn::spanned::Spanned;
use syn::visit::{self, Visit};

/// Folders whose Rust sources the lint reads, relative to the workspace root.
const ROOTS: [&str; 3] = ["backends", "frontend/src/onnx", "passes/src"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Catch-all arms of matches over op kinds: (line, the arm's pattern).
#[derive(Default)]
struct CatchAlls {
    found: Vec<(usize, String)>,
}

fn names_an_op(pat: &syn::Pat) -> bool {
    let text = quote_pattern(pat);
    text.contains("OpKind ::") || text.contains("NodeKind ::")
}

fn quote_pattern(pat: &syn::Pat) -> String {
    use quote::ToTokens;
    pat.to_token_stream().to_string()
}

fn catch_all(arm: &syn::Arm) -> bool {
    arm.guard.is_none()
        && match &arm.pat {
            syn::Pat::Wild(_) => true,
            syn::Pat::Ident(i) => {
                i.subpat.is_none() && i.ident.to_string().starts_with(|c: char| c.is_lowercase())
            }
            _ => false,
        }
}

impl<'ast> Visit<'ast> for CatchAlls {
    fn visit_expr_match(&mut self, m: &'ast syn::ExprMatch) {
        if m.arms.iter().any(|a| names_an_op(&a.pat)) {
            for arm in m.arms.iter().filter(|a| catch_all(a)) {
                self.found
                    .push((arm.pat.span().start().line, quote_pattern(&arm.pat)));
            }
        }
        visit::visit_expr_match(self, m);
    }
}

#[test]
fn matches_over_op_kinds_are_exhaustive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ROOTS {
        sources(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(
        files.len() > 50,
        "the lint found only {} files",
        files.len()
    );
    let mut report = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut v = CatchAlls::default();
        v.visit_file(&ast);
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, pat) in v.found {
            report.push(format!(
                "{shown}:{line}: `{pat} =>` in a match over op kinds"
            ));
        }
    }
    assert!(
        report.is_empty(),
        "name every op instead of a catch-all arm (a new op must be a compile error here):\n{}",
        report.join("\n")
    );
}

/// Public functions (and methods of public traits) return typed errors, never
/// `Result<_, String>`: a caller can match on what went wrong, and every error renders
/// through one diagnostic printer.
#[test]
fn public_functions_return_typed_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in [
        "ir/src",
        "frontend/src",
        "passes/src",
        "backends",
        "models/src",
        "tools/dnnc/src",
        "testgen/src",
        "lit-tests/src",
    ] {
        sources(&root.join(dir), &mut files);
    }
    files.retain(|f| {
        !f.components()
            .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "examples")
    });
    let mut report = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut v = StringErrors::default();
        v.visit_file(&ast);
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, name) in v.found {
            report.push(format!(
                "{shown}:{line}: `{name}` returns Result<_, String>"
            ));
        }
    }
    assert!(
        report.is_empty(),
        "give these a thiserror type ({} functions):\n{}",
        report.len(),
        report.join("\n")
    );
}

/// Public functions and public trait methods whose return type is `Result<_, String>`.
#[derive(Default)]
struct StringErrors {
    found: Vec<(usize, String)>,
    /// Inside a `#[cfg(test)]` module or a non-public trait.
    skip: usize,
}

fn returns_string_error(sig: &syn::Signature) -> bool {
    let syn::ReturnType::Type(_, ty) = &sig.output else {
        return false;
    };
    let syn::Type::Path(p) = &**ty else {
        return false;
    };
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    if last.ident != "Result" {
        return false;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    matches!(args.args.iter().nth(1), Some(syn::GenericArgument::Type(syn::Type::Path(e)))
        if e.path.is_ident("String"))
}

fn is_test_module(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && quote_tokens(&a.meta).contains("test"))
}

fn quote_tokens(t: &impl quote::ToTokens) -> String {
    t.to_token_stream().to_string()
}

impl<'ast> Visit<'ast> for StringErrors {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let test = is_test_module(&m.attrs);
        self.skip += usize::from(test);
        visit::visit_item_mod(self, m);
        self.skip -= usize::from(test);
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if self.skip == 0
            && matches!(f.vis, syn::Visibility::Public(_))
            && returns_string_error(&f.sig)
        {
            self.found
                .push((f.sig.ident.span().start().line, f.sig.ident.to_string()));
        }
        visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if self.skip == 0
            && matches!(f.vis, syn::Visibility::Public(_))
            && returns_string_error(&f.sig)
        {
            self.found
                .push((f.sig.ident.span().start().line, f.sig.ident.to_string()));
        }
        visit::visit_impl_item_fn(self, f);
    }
    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        if self.skip == 0 && matches!(t.vis, syn::Visibility::Public(_)) {
            for item in &t.items {
                if let syn::TraitItem::Fn(f) = item
                    && returns_string_error(&f.sig)
                {
                    self.found.push((
                        f.sig.ident.span().start().line,
                        format!("{}::{}", t.ident, f.sig.ident),
                    ));
                }
            }
        }
        visit::visit_item_trait(self, t);
    }
}
