"""``bnnfab report``: the page's sections, its numbers against the simulator and the generator,
self-containment, byte-for-byte determinism, build results, verification status (run on Icarus,
failed, or plainly not run) and the errors."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import re
import shutil

import numpy as np
import pytest
from conftest import tiny_mlp

from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
from bnnfab.codegen.report_html import (
    ReportError,
    add_arguments,
    build_report,
    gather_report,
    load_build_result,
    markdown_to_html,
    render_report,
    run,
)
from bnnfab.codegen.verify import VerifyReport
from bnnfab.models import Model, zoo
from bnnfab.models.datasets import load_dataset
from bnnfab.sim.functional import Simulator

SECTIONS = ("model-card", "accuracy", "cycles", "mst", "utilisation", "verification")
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
CONFIG = GenConfig(target_cycles=64)


@pytest.fixture(scope="module")
def mlp_data():
    return gather_report(zoo.load("digits-ecoc-mlp"), config=CONFIG)


@pytest.fixture(scope="module")
def mlp_page(mlp_data):
    return render_report(mlp_data)


def _tiny(seed: int = 0, name: str = "tiny") -> Model:
    """A three-layer MLP that generates in a moment (no dataset fits it), with metadata to show."""
    return tiny_mlp(seed, name, metadata={"zeta": "last", "alpha": "<b>first</b>"})


def _section(page: str, sid: str) -> str:
    start = page.index(f'<section id="{sid}">')
    return page[start : page.index("</section>", start)]


# -- contents ------------------------------------------------------------------------------------


def test_page_has_every_section_in_order(mlp_page):
    positions = [mlp_page.index(f'<section id="{sid}">') for sid in SECTIONS]
    assert positions == sorted(positions)
    assert mlp_page.startswith("<!DOCTYPE html>") and mlp_page.rstrip().endswith("</html>")
    assert "<h1>bnnfab report: digits-ecoc-mlp</h1>" in mlp_page


def test_accuracy_is_the_simulators(mlp_data, mlp_page):
    ds = load_dataset("digits", "test")
    classes = Simulator(zoo.load("digits-ecoc-mlp")).run(ds.x).classes
    correct = int((classes == ds.y).sum())
    assert (mlp_data.accuracy.correct, mlp_data.accuracy.images) == (correct, len(ds))
    assert sum(k for _, _, k in mlp_data.accuracy.per_class) == correct
    text = _section(mlp_page, "accuracy")
    assert f"<strong>{correct / len(ds) * 100:.2f}%</strong> ({correct:,} of {len(ds):,})" in text
    assert "digits dataset, test split" in text


def test_model_card_shows_the_bundled_card_and_metadata(mlp_page):
    card = _section(mlp_page, "model-card")
    assert "8x8x1, unsigned 8-bit integers" in card
    assert "metadata: builder" in card
    assert "Bundled model card" in card and "<code>bnnfab.models.zoo.builders.ecoc_mlp</code>" in card
    assert "<td>features</td>" in card and "<td>xnor-popcount</td>" in card


def test_cycle_section_matches_the_generator_and_cycle_model(mlp_data, mlp_page):
    from bnnfab.codegen.generate import design_manifest, generate

    design = generate(zoo.load("digits-ecoc-mlp"), CONFIG)
    timing = design_manifest(design)["timing"]
    assert mlp_data.timing == timing
    per_image = [lp.cycles_per_image for lp in design.plan.layers]
    assert [r["cycles_per_image"] for r in mlp_data.engine_cycles] == per_image
    assert [r["cycles_per_vector"] for r in mlp_data.engine_cycles] == design.report["cycles_per_vector"].tolist()
    text = _section(mlp_page, "cycles")
    assert f"<strong>{timing['cycles_per_image']:,} cycles per image</strong>" in text
    assert f"latency <strong>{timing['latency_cycles']:,} cycles</strong>" in text
    slowest = design.report["name"][int(np.argmax(per_image))]
    assert re.search(rf'Bottleneck: <span class="bottleneck">[^<]*L\d+ {slowest}', text)


def test_mst_savings_at_every_depth_limit(mlp_data, mlp_page):
    from bnnfab.sim.mst import plan_mst

    model = zoo.load("digits-ecoc-mlp")
    assert mlp_data.mst_depths == (1, 2, 4, 8, None)
    binary = [i for i, _ in model.compute_layers if not model.takes_integers(i)]
    assert [r["layer"] for r in mlp_data.mst] == binary
    for row in mlp_data.mst:
        layer = model.layers[row["layer"]]
        assert row["direct_ops"] == layer.n * layer.k * model.positions(row["layer"])
        for depth in (1, 2, 4, 8, None):
            assert row["mst_ops"][depth] == plan_mst(layer.weights_2d, max_depth=depth).cost * row["positions"]
        ops = [row["mst_ops"][d] for d in (1, 2, 4, 8, None)]
        assert ops == sorted(ops, reverse=True) and ops[0] < row["direct_ops"]
    text = _section(mlp_page, "mst")
    for head in ("direct", "depth 1", "depth 2", "depth 4", "depth 8", "unlimited"):
        assert f"<th>{head}</th>" in text
    assert "This design uses no MST schedule" in text  # every engine of CONFIG is folded


def test_utilisation_is_marked_as_estimates(mlp_data, mlp_page):
    text = _section(mlp_page, "utilisation")
    assert "<strong>These are estimates</strong>" in text
    assert f'<td class="num">{int(mlp_data.design_report["lut4_est"].sum()):,}</td>' in text
    assert "No synthesis or build result was given" in text


def test_verification_not_run_says_so(mlp_page):
    text = _section(mlp_page, "verification")
    assert "NOT RUN" in text
    assert "PASS" not in mlp_page and "badge pass" not in mlp_page
    assert "verification not run" in mlp_page


# -- self-contained and deterministic ------------------------------------------------------------


def test_page_is_self_contained(mlp_page):
    images = DATA_URI.findall(mlp_page)
    assert len(images) == 2
    for b64 in images:
        png = base64.b64decode(b64)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert b"Software" not in png and b"matplotlib" not in png.lower()
    assert re.findall(r'src="([^"]*)"', mlp_page) == [f"data:image/png;base64,{b}" for b in images]
    text = DATA_URI.sub("", mlp_page)  # base64 could spell anything
    assert "http" not in text.lower() and "//" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', text))


def test_same_inputs_same_bytes(mlp_page):
    again = build_report(zoo.load("digits-ecoc-mlp"), config=CONFIG)
    assert again.encode() == mlp_page.encode()


def test_timestamp_only_when_asked(mlp_data, mlp_page):
    assert "· generated" not in mlp_page
    stamped = render_report(dataclasses.replace(mlp_data, timestamp="2030-01-02 03:04:05 UTC"))
    assert "generated 2030-01-02 03:04:05 UTC" in stamped


def test_write_report_and_command_helpers(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "r.html"
    args = parser.parse_args(["tiny", "-o", str(out), "--dataset", "digits"])
    assert (args.verify, args.simulator, args.build_report, args.timestamp) == (0, None, None, False)
    with pytest.raises(ReportError, match=r"does not fit the model: .*\(--dataset\)"):
        run(args, _tiny(), GenConfig())
    args.dataset = None
    printed = io.StringIO()
    assert run(args, _tiny(), GenConfig(layers={1: LayerChoice(engine=Engine.UNROLLED)}), out=printed) == 0
    page = out.read_text(encoding="utf-8")
    assert printed.getvalue() == f"wrote {out}: no accuracy, {_cycles(page)} cycles per image, verification not run\n"
    assert "Not measured: no dataset was given." in page
    assert "<td>layer 1</td><td>unrolled</td>" in page
    assert re.search(r"This design computes through MST schedules in its unrolled layers: L1 [^<]*"
                     r"binary ops per vector instead of 384 \(depth \d reached\)", page)
    # metadata sorted and escaped; no bundled card for a model that is not bundled
    assert page.index("metadata: alpha") < page.index("metadata: zeta")
    assert "&lt;b&gt;first&lt;/b&gt;" in page and "<b>first</b>" not in page
    assert "Not a bundled model" in page


def _cycles(page: str) -> str:
    return re.search(r"<strong>([\d,]+) cycles per image</strong>", page).group(1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--verify", "-1"], "--verify: must be a whole number >= 0, not '-1'"),
        (["--clock-mhz", "0"], "--clock-mhz: must be a positive number of MHz, not '0'"),
    ],
)
def test_bad_options_name_the_rule(capsys, argv, message):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["tiny", *argv])
    assert message in capsys.readouterr().err


def test_a_renamed_bundled_model_gets_no_card():
    bundled = zoo.load("digits-ecoc-mlp")
    changed = Model(bundled.input, bundled.layers, name=bundled.name, metadata={**bundled.metadata, "edited": "1"})
    assert gather_report(bundled, dataset=None, mst_depths=(1,)).card is not None
    assert gather_report(changed, dataset=None, mst_depths=(1,)).card is None


# -- build results -------------------------------------------------------------------------------


BUILD = {
    "board": "icebreaker",
    "device": "iCE40UP5K",
    "luts": 1234,
    "ffs": 567,
    "brams": 8,
    "carries": 90,
    "dsps": 0,
    "lut_equivalent": 1234,
    "fmax_mhz": 48.1234,
    "timing_met": True,
    "pnr": {"ICESTORM_LC": {"used": 1400, "available": 5280}, "ICESTORM_RAM": {"used": 8, "available": 30}},
    "files": {"log": "build.log"},
}


def test_build_result_shows_real_numbers_beside_estimates(tmp_path):
    path = tmp_path / "build_report.json"
    path.write_text(json.dumps(BUILD))
    data = gather_report(_tiny(), dataset=None, build_result=path, mst_depths=(1, None))
    page = render_report(data)
    text = _section(page, "utilisation")
    est = int(data.design_report["lut4_est"].sum())
    assert f"<tr><td>LUT4</td><td class=\"num\">{est:,}</td><td class=\"num\">1,234</td><td>lut_equivalent</td></tr>" in text
    assert "<tr><td>flip-flops</td>" in text and "<tr><td>block RAMs</td>" in text
    assert "<td>ICESTORM_LC</td><td class=\"num\">5,280</td><td class=\"num\">1,400</td>" in text
    assert "<td>fmax_mhz</td><td class=\"num\">48.12</td>" in text and "<td>timing_met</td><td>yes</td>" in text
    assert str(path) in text
    assert page == render_report(gather_report(_tiny(), dataset=None, build_result=path, mst_depths=(None, 1)))


def test_build_result_errors(tmp_path):
    with pytest.raises(ReportError, match="no such build report file: .*missing.json"):
        load_build_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="a build report must be a JSON file"):
        load_build_result(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ReportError, match="must be a JSON object .*, not a list"):
        load_build_result(bad)
    assert load_build_result({"b": 1, "a": {"x": 2}}) == {"a": {"x": 2}, "b": 1}


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"verify_images": 2, "dataset": None}, "verifying needs images: give a dataset"),
        ({"verify_images": -1}, "verify_images must be a whole number >= 0, not -1"),
        ({"mst_depths": (0,)}, r"MST depth limits must be whole numbers >= 1 or None \(unlimited\), not 0"),
        ({"stalls": "often"}, "stalls must be one of none, random, bursty, not 'often'"),
        ({"clock_mhz": 0}, "the clock must be a positive number of MHz, not 0"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; available: digits"),
        ({"verify_images": 1, "simulator": "modelsim"}, "simulator must be one of icarus, verilator, not 'modelsim'"),
    ],
)
def test_errors_name_the_rule_and_value(options, message):
    with pytest.raises(ReportError, match=message):
        gather_report(_tiny(), **options)


def test_config_errors_become_report_errors():
    with pytest.raises(ReportError, match=r"layer 7, which is not a compute layer; compute layers: \[0, 1, 2\]"):
        gather_report(_tiny(), dataset=None, config=GenConfig(layers={7: LayerChoice(engine=Engine.UNROLLED)}))


# -- verification --------------------------------------------------------------------------------


def test_failed_verification_is_shown_as_a_failure(mlp_data):
    failed = VerifyReport(simulator="icarus", images=3, passed=False, accepted=3, emitted=2, cycles=99,
                          first_mismatch="image 1: RTL gave class 3; the simulator gives class 5")
    page = render_report(dataclasses.replace(mlp_data, verification=failed, verify_dir="/kept/here"))
    text = _section(page, "verification")
    assert '<span class="badge fail">FAIL</span> First mismatch: image 1: RTL gave class 3' in text
    assert "kept in /kept/here" in text
    assert "PASS" not in page and "verification FAIL" in page


@pytest.mark.rtl
def test_verify_three_images_on_icarus(icarus, tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "report.html"
    args = parser.parse_args([zoo.DEFAULT, "-o", str(out), "--verify", "3", "--simulator", "icarus"])
    printed = io.StringIO()
    assert run(args, zoo.load("digits-ecoc-mlp"), CONFIG, out=printed) == 0, printed.getvalue()
    page = out.read_text(encoding="utf-8")
    text = _section(page, "verification")
    assert '<span class="badge pass">PASS</span> Every result bit-exact with the simulator' in text
    assert "<tr><td>simulator</td><td>icarus</td></tr>" in text
    assert "<tr><td>images</td><td>3 (the first of the digits test split)</td></tr>" in text
    assert "<tr><td>results emitted</td><td class=\"num\">3</td></tr>" in text
    assert "verification PASS" in printed.getvalue()
    assert "wall time" not in text  # no timing unless a timestamp is asked for


def test_card_markdown_renders_without_links_or_markup_injection():
    text = (
        "# title\n\nA *line* with `code <x>`\nand **bold** and [a link](https://example.org).\n\n"
        "| | |\n|---|---|\n| input | 8x8 -> 255 |\n\n- one\n- two <script>\n\n```\nraw <b>\n```\n"
    )
    out = markdown_to_html(text)
    assert "<h3>title</h3>" in out
    assert "<p>A *line* with <code>code &lt;x&gt;</code> and <strong>bold</strong> and a link.</p>" in out
    assert "<table>\n<tbody>\n<tr><td>input</td><td>8x8 -&gt; 255</td></tr>" in out  # empty header dropped
    assert "<ul>\n<li>one</li>\n<li>two &lt;script&gt;</li>\n</ul>" in out
    assert "<pre>raw &lt;b&gt;</pre>" in out
    assert "http" not in out and "<script" not in out


@pytest.mark.parametrize("passed", [True, False])
def test_verification_folder_is_kept_only_after_a_failure(monkeypatch, tmp_path, passed):
    import bnnfab.codegen.verify as verify

    seen = {}

    def fake_verify(design, images, **kwargs):  # no simulator needed: the outcome is given
        seen["folder"] = design.verilog.parent.parent
        return VerifyReport(simulator=kwargs["simulator"], images=len(images), passed=passed, accepted=2, emitted=2,
                            first_mismatch=None if passed else "image 0: wrong")

    monkeypatch.setattr(verify, "verify_design", fake_verify)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([zoo.DEFAULT, "-o", str(tmp_path / "r.html"), "--verify", "2", "--simulator", "icarus"])
    printed = io.StringIO()
    assert run(args, zoo.load("digits-ecoc-mlp"), CONFIG, out=printed) == (0 if passed else 1)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert seen["folder"].is_dir() != passed
    if not passed:
        assert f"kept in {seen['folder']}" in page and "FAIL: 2 images" in printed.getvalue()
        shutil.rmtree(seen["folder"])
