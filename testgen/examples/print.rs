//! Prints the module a recipe builds: `cargo run -p dnnc-testgen --example print SEED [STEPS]`.
fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let seed = args.first().copied().unwrap_or(0);
    let steps = args.get(1).copied().unwrap_or(4 + seed % 21) as usize;
    let m = dnnc_testgen::Recipe::random(seed, steps).build();
    print!("{}", dnnc_ir::printer::print_module(&m));
}
