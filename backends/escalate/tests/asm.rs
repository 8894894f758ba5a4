//! Assembler round trips over random instructions: text → binary → text is the identity.

use dnnc_escalate::isa::{self, Inst};
use proptest::prelude::*;

fn any_inst() -> impl Strategy<Value = Inst> {
    (0usize..12, proptest::collection::vec(any::<u32>(), 15)).prop_map(|(op, v)| match op {
        0 => Inst::Layer {
            c: v[0],
            h: v[1],
            w: v[2],
            k: v[3],
            m: v[4],
            r: v[5],
            s: v[6],
            stride_h: v[7],
            stride_w: v[8],
            pad_t: v[9],
            pad_l: v[10],
            dil_h: v[11],
            dil_w: v[12],
            ho: v[13],
            wo: v[14],
        },
        1 => Inst::Load {
            buf: v[0] % 6,
            dram: v[1],
            addr: v[2],
            len: v[3],
            count: v[4],
            stride: v[5],
            bits: v[6] % 33,
        },
        2 => Inst::Store {
            dram: v[0],
            len: v[1],
            count: v[2],
            stride: v[3],
            bits: v[4],
        },
        3 => Inst::Tile {
            c0: v[0],
            c1: v[1],
            y0: v[2],
            y1: v[3],
            k0: v[4],
            k1: v[5],
        },
        4 => Inst::Zero {},
        5 => Inst::Bconv { m: v[0] },
        6 => Inst::Cacc {
            m: v[0],
            addr: v[1],
            count: v[2],
            chunk: v[3],
            shift: v[4],
        },
        7 => Inst::Dconv { addr: v[0] },
        8 => Inst::Act {
            act: v[0] % 3,
            bias: v[1],
            round: v[2] % 2,
            bits: v[3],
        },
        9 => Inst::Sync {},
        10 => Inst::Sconv {
            addr: v[0],
            count: v[1],
        },
        _ => Inst::Halt {},
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn text_binary_text_is_the_identity(program in proptest::collection::vec(any_inst(), 0..40)) {
        let text = isa::disassemble(&program);
        let parsed = isa::assemble(&text).unwrap();
        prop_assert_eq!(&parsed, &program);
        let decoded = isa::decode(&isa::encode(&parsed)).unwrap();
        prop_assert_eq!(isa::disassemble(&decoded), text);
    }
}
