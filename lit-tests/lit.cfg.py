# Configuration for running these tests with LLVM's lit:
#   DNNC_BIN_DIR=target/debug lit lit-tests     (FileCheck from LLVM must be on PATH)
import os
import lit.formats

config.name = "dnnc"
config.test_format = lit.formats.ShTest()
config.suffixes = [".dnn", ".repl"]
config.excludes = ["Inputs"]
config.test_source_root = os.path.dirname(__file__)
bin_dir = os.environ.get("DNNC_BIN_DIR", os.path.join(config.test_source_root, "..", "target", "debug"))
config.environment["PATH"] = os.pathsep.join([os.path.abspath(bin_dir), os.environ.get("PATH", "")])
