"""Bad input through the command line: every case exits with code 2, prints
one `error:` line that names the problem, and leaves nothing behind (no run,
export, report or table). In-process through `main([...])`, as the commands'
own tests keep one real `python -m` call each."""

import os
import re

import pytest

from bali_jax.cli import main


def _files(root) -> set[str]:
  return {os.path.relpath(os.path.join(d, f), root)
          for d, _, fs in os.walk(root) for f in fs} | {
              os.path.relpath(d, root) for d, _, _ in os.walk(root)}


@pytest.fixture
def inputs(tmp_path):
  """A directory that is neither a run nor an HF model, a file, a corpus."""
  junk = tmp_path / "in" / "junk"
  junk.mkdir(parents=True)
  (junk / "notes.txt").write_text("not a model\n")
  corpus = tmp_path / "in" / "gold.pubtator"
  corpus.write_text("1|t|Anemia.\n1\t0\t6\tAnemia\tDisease\tMESH:D000740\n\n")
  return {"junk": str(junk), "corpus": str(corpus),
          "missing": str(tmp_path / "in" / "nowhere")}


CASES = {
    # command: bench
    "bench-data-and-synthetic": (
        lambda p, o: ["bench", "--config", "tiny", "--data", p["junk"],
                      "--synthetic", "--out", f"{o}/bench.json"],
        r"give --data DIR or --synthetic \(one of them\)"),
    "bench-neither": (
        lambda p, o: ["bench", "--config", "tiny", "--out",
                      f"{o}/bench.json"],
        r"give --data DIR or --synthetic"),
    # ablate
    "ablate-malformed-variant": (
        lambda p, o: ["ablate", "--data", p["junk"], "--workdir",
                      f"{o}/abl", "--variant", "lr_lm=1e-5"],
        r"--variant 'lr_lm=1e-5': expected NAME:key=value"),
    "ablate-unknown-key-in-variant": (
        lambda p, o: ["ablate", "--data", p["junk"], "--workdir",
                      f"{o}/abl", "--variant", "x:stepz=3"],
        r"variant x: unknown config key 'stepz'"),
    "ablate-variant-run-fails": (
        lambda p, o: ["ablate", "--data", p["dataset"], "--workdir",
                      f"{o}/abl", "--config", "tiny", "--steps", "1",
                      "--variant", "x:batch_size=6"],
        r"variant x failed \(exit 2: error: batch_size=6 must be "
        r"divisible.*log: .*abl/x\.log",
        {"out/abl", "out/abl/x.log"}),  # the log says why: kept
    "ablate-data-not-a-dataset": (
        lambda p, o: ["ablate", "--data", p["missing"], "--workdir",
                      f"{o}/abl", "--variant", "a:steps=1"],
        r"data_dir=.*nowhere: no bali_dataset.json"),
    # train
    "train-no-data-dir": (
        lambda p, o: ["train", "--config", "tiny", "--workdir", f"{o}/run"],
        r"data_dir= is required"),
    "train-unknown-preset": (
        lambda p, o: ["train", "--config", "tinyy", "--workdir", f"{o}/run",
                      f"data_dir={p['junk']}"],
        r"unknown config preset 'tinyy'; expected tiny, open_default"),
    "train-malformed-override": (
        lambda p, o: ["train", "--config", "tiny", "--workdir", f"{o}/run",
                      f"data_dir={p['junk']}", "steps"],
        r"override 'steps' is not key=value"),
    "train-data-dir-not-a-dataset": (
        lambda p, o: ["train", "--config", "tiny", "--workdir", f"{o}/run",
                      f"data_dir={p['junk']}"],
        r"data_dir=.*junk: no bali_dataset.json \(build one with"),
    # export-hf
    "export-neither-run-nor-hf": (
        lambda p, o: ["export-hf", "--source", p["junk"], "--out",
                      f"{o}/hf"],
        r"--source .*junk: neither a Hugging Face BERT directory"),
    "export-missing-source": (
        lambda p, o: ["export-hf", "--source", p["missing"], "--out",
                      f"{o}/hf"],
        r"--source .*nowhere: no such directory"),
    # evaluate
    "evaluate-bad-model-dir": (
        lambda p, o: ["evaluate", "--model", "starter", "--model", p["junk"],
                      "--kg", "open-default", "--corpus", p["corpus"],
                      "--corpus-format", "pubtator", "--out",
                      f"{o}/report.json"],
        r"--model .*junk: neither a training run directory"),
    "evaluate-missing-model-dir": (
        lambda p, o: ["evaluate", "--model", p["missing"], "--kg",
                      "open-default", "--corpus", p["corpus"],
                      "--corpus-format", "pubtator"],
        r"--model .*nowhere: no such directory"),
    "evaluate-nothing-to-evaluate": (
        lambda p, o: ["evaluate", "--model", "starter", "--kg",
                      "open-default"],
        r"nothing to evaluate: give --data DIR"),
    "evaluate-corpus-without-format": (
        lambda p, o: ["evaluate", "--model", "starter", "--kg",
                      "open-default", "--corpus", p["corpus"], "--out",
                      f"{o}/report.json"],
        r"--corpus needs --corpus-format pubtator\|bern2\|bioc"),
    "evaluate-models-from-matches-no-run": (
        lambda p, o: ["evaluate", "--model", "starter", "--kg",
                      "open-default", "--corpus", p["corpus"],
                      "--corpus-format", "pubtator", "--models-from",
                      f"{p['missing']}/seed*"],
        r"--models-from .*nowhere/seed\*: matches no training run"),
    "evaluate-negative-bootstrap": (
        lambda p, o: ["evaluate", "--model", "starter", "--kg",
                      "open-default", "--bootstrap", "-1"],
        r"--bootstrap -1: resamples must be >= 0"),
    "evaluate-malformed-memory-budget": (
        lambda p, o: ["evaluate", "--model", "starter", "--kg",
                      "open-default", "--memory-budget", "lots"],
        r"memory budget 'lots': expected a size such as 4GiB"),
    "evaluate-memory-budget-below-one-block-dataset": (
        lambda p, o: ["evaluate", "--model", "starter", "--data",
                      p["dataset"], "--memory-budget", "1KiB",
                      "--vectors-dir", f"{o}/vectors", "--out",
                      f"{o}/report.json"],
        r"memory budget 1\.0 KiB is too small for one query block: at "
        r"least [0-9.]+ [KM]iB \([0-9,]+ bytes\) is needed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(
    case, inputs, tmp_path, capsys, request):
  argv, message, *kept = CASES[case]
  if "dataset" in case or "run-fails" in case:
    inputs["dataset"] = request.getfixturevalue("tiny_dataset")
  out = tmp_path / "out"
  out.mkdir()
  before = _files(tmp_path)
  capsys.readouterr()  # a fixture built just now printed its progress
  assert main(argv(inputs, str(out))) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  assert re.search(message, err[0]), err[0]
  assert _files(tmp_path) == before | (kept[0] if kept else set())
