"""What a trained network has learned: generated words, word boundaries, Elman's word
categories, memory of past characters, and the path of its hidden state.

``analyze_run(run_dir)`` loads the run's last checkpoint, rebuilds its text and vocabulary,
computes the metrics below, writes ``analysis.json``, merges the scalar metrics into
``summary.json`` (so a sweep table can compare them) and draws the run's plots. The metric
functions are plain functions on arrays, usable on any parameters (e.g. an untrained
network, which every run is compared against), each in the module of its job:
network_states (the states, the trajectory), word_metrics (generated words, word boundaries),
elman_structure (the word categories), memory_probe, training_dynamics (diagnostics.npz);
this module puts them together for one run.

Conventions: ``states[t]`` is the hidden state right after the network has read character
``t`` of the text, the whole text run as one stream from h = 0 (as the trainer walks it;
states are causal, so the validation part of the stream sees only its own past). The
validation split is the last ``val_fraction`` of the text, cut as the trainer cuts it. A text
of more than ``ANALYSIS_MAX_CHARS`` characters is analysed on an excerpt around that cut (the
end of the training split, then the start of the validation split, one stream from h = 0
at the excerpt's start), and the memory probe fits on at most ``PROBE_FIT_ROWS`` states and
scores at most ``PROBE_SCORE_ROWS``, so time and memory stay bounded on any text (the Elman
corpus, ~12k characters, is analysed whole and probed on every state).

Metrics (all in analysis.json under these names; scalars also in summary.json):

- vocab_hit_rate: fraction of the words of ~2000 generated characters that are words of
  the training text (the Elman corpus only: on any other text a word list of the whole text
  is unknown to the analysis, which reads an excerpt, and punctuation sticks to words, so the
  number would mislead; a note says it does not apply and the generated text is kept).
- boundary_accuracy / within_word_accuracy / word_end_accuracy: argmax next-character
  accuracy on the validation text right after a space (which word comes next), inside a
  word (the next letter), and at a word's last letter (is the next character a space).
- Structure metrics (see the comment above elman_structure.STRUCTURES): each category word token is
  classified from its hidden state by nearest centroid with its whole word type held out
  (a word is placed by the OTHER words of its class, so its own spelling cannot do it), and
  the same is done on the untrained network's states (`<metric>_init`) and on the word's
  letters alone (`<metric>_spelling`); `<metric>_margin` = trained - the best of those and
  the majority-class rate, with a 95% bootstrap CI over word types
  (`_margin_ci_low/_high`), and `<metric>_beats_baselines` = that CI is above 0.
  category_separation (chance: category_chance, the majority-class rate, not 1/7): Elman's
  7 categories at the boundary state (after the space that ends the word).
  noun_verb_separation (noun_verb_chance): noun vs verb at the state BEFORE the word's last
  letter: every verb here ends in -s, so at the boundary an "ends in -s" rule scores 0.99 and
  an untrained network 0.96, above the trained one; the -s is not read yet one letter earlier.
  noun_category_separation / verb_category_separation: the 4 noun classes among the nouns,
  the 3 verb classes among the verbs (boundary state), where spelling says little.
  dendrogram_noun_verb_ari (_init, _spelling, _margin): the adjusted Rand index between the
  top split of the dendrogram of the word means (as drawn) and noun | verb.
  Why the boundary state and whole types held out for the categories: with token-level
  leave-one-out at the last letter, a word's other tokens (same spelling, same state) define
  its centroid, and an untrained network scored 0.72-0.83, as high as trained ones.
- memory_probe (memory_lag1_accuracy, memory_span, memory_chance): a ridge readout
  decoding the character k steps back from the state, k = 1 .. 2 x seq_len, fit on the
  training text (its last PROBE_FIT_ROWS states), scored on the validation text (its first
  PROBE_SCORE_ROWS states); see memory_probe.memory_probe.
- *_init: the same metrics for the run's own untrained network (same init and seed), so
  every run says what training added.
- gradient_fall_median / _first / _last: ||dL_T/dh_T|| / ||dL_T/dh_1||, how far the last
  step's loss gradient falls over the chunk, from diagnostics.npz (median over the record
  steps, at step 1 and at the last record step); absent with record=false.
- analysis_step: the training step of the checkpoint analysed.

Every cell (rnn, gru, lstm: rnn_lab.core.cells): the metrics above read the hidden state h
(the LSTM's cell state c carries along unseen) and keep their names and meaning. Gated cells
add spectral_radius_<gate> (each gate's H x H recurrent block at the checkpoint) and
gate_saturation_<gate> (fraction of the gate's values within 0.05 of the ends of its range over
the analysed text); their jacobian_bound_* are null (see training_dynamics.jacobian_bound).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np

from rnn_lab.core.data import EncodedText, Vocab, split_ids
from rnn_lab.inspect.elman_structure import category_structure, structure_metrics
from rnn_lab.inspect.load import cell_options, load_run
from rnn_lab.inspect.memory_probe import memory_probe
from rnn_lab.inspect.network_states import (
    hidden_states,
    hidden_trajectory,
    output_logits,
    run_states,
)
from rnn_lab.inspect.run_end import log_failed_analysis, log_written
from rnn_lab.inspect.task_metrics import analyze_task_params, is_sequence_task
from rnn_lab.inspect.training_dynamics import (
    GATED_BOUND_NOTE,
    gate_spectral_radii,
    gradient_decay,
    gradient_fall,
    jacobian_bound,
)
from rnn_lab.inspect.word_metrics import (
    GENERATED_LENGTH,
    NOT_ELMAN_HIT_RATE,
    generate_text,
    vocab_hit_rate,
    word_position_accuracy,
)
from rnn_lab.run import rundir
from rnn_lab.run.input_files import load_corpus
from rnn_lab.run.rundir import (
    ANALYSIS_FILE,
    RunDirError,
    atomic_write_json,
    read_json,
)

log = logging.getLogger("rnn_lab")
detail_log = logging.getLogger("rnn_lab.detail")  # lines for train.log, not the terminal

# Longest text analysed whole; (N, H) states of two networks and (N, V) probe targets per lag.
ANALYSIS_MAX_CHARS = 100_000


# --------------------------------------------------------------------------------------
# Everything for one set of parameters
# --------------------------------------------------------------------------------------


def initial_params(settings: dict, vocab_size: int):
    """The run's untrained network: its cell and init rebuilt from the settings (seeded, so
    exact). None when it cannot be rebuilt (e.g. init=file whose file is gone)."""
    from rnn_lab.run.input_files import build_params
    from rnn_lab.run.settings import DTYPES, TrainSettings

    defaults = TrainSettings()
    get = lambda key: settings.get(key, getattr(defaults, key))  # noqa: E731
    try:
        embed_dim = get("embed_dim") if get("use_embedding") else 0
        sizes = (vocab_size, get("hidden_size"), vocab_size)
        dtype = DTYPES[get("dtype")]
        return build_params(
            get("init"),
            sizes,
            seed=get("seed"),
            embed_dim=embed_dim,
            dtype=dtype,
            **cell_options(settings),
        )
    except (ValueError, TypeError, KeyError, OSError) as e:
        log.info("analysis: cannot rebuild the initial network (%s)", e)
        return None


def params_are_finite(params) -> bool:
    return all(np.all(np.isfinite(a)) for a in params.arrays().values())


def analyze_params(
    params, settings: dict, text: str, vocab: Vocab, *, compare_init=True, split=None
) -> dict:
    """All the metrics of one network on its text; the analysis.json document.

    split: where text's validation part starts (None: its last val_fraction, as trained).
    Top-level keys with scalar values are the metrics (merged into summary.json);
    "details" holds the curves and tables the plots draw; "notes" says what was skipped.
    """
    activation = str(settings.get("activation", "tanh"))
    seq_len = int(settings.get("seq_len", 25))
    val_fraction = float(settings.get("val_fraction", 0.1))
    ids = vocab.encode(text)
    split = len(split_ids(ids, val_fraction)[0]) if split is None else split
    notes: list[str] = []
    metrics: dict = {}
    details: dict = {}

    states, gates = run_states(params, activation, ids)
    if not np.all(np.isfinite(states)):
        return {"notes": ["hidden states are not finite: nothing to analyse"], "details": {}}
    # Gated cells: how many gate values sit at the ends of their range over the text read.
    metrics.update({f"gate_saturation_{g}": v for g, v in gates.items()})

    # Generated text: how many of its words are real words (the Elman corpus only).
    generated = generate_text(
        params,
        activation,
        vocab,
        GENERATED_LENGTH,
        float(settings.get("temperature", 1.0)),
        int(settings.get("seed", 0)),
    )
    details["generated"] = {"text": generated}
    is_elman = (settings.get("data") or {}).get("name") == "elman"
    if is_elman:
        hit = vocab_hit_rate(generated, set(text[:split].split()))
        metrics["vocab_hit_rate"] = hit["vocab_hit_rate"]
        details["generated"].update(hit)
    else:
        notes.append(NOT_ELMAN_HIT_RATE)

    # Word boundaries: predictions over the validation text.
    predicted = output_logits(params, states[split:-1]).argmax(axis=1)
    positions = word_position_accuracy(vocab.decode(predicted), text, split)
    for k in ("boundary_accuracy", "within_word_accuracy", "word_end_accuracy"):
        metrics[k] = positions[k]
    details["word_position"] = positions

    # The untrained network, for the category and memory baselines.
    init_states = None
    if compare_init:
        init = initial_params(settings, vocab.size)
        if init is not None:
            init_states = hidden_states(init, activation, ids)
            if not np.all(np.isfinite(init_states)):
                init_states = None
                notes.append("the untrained network's states are not finite: no *_init metrics")
        else:
            notes.append("the untrained network could not be rebuilt: no *_init metrics")

    # Elman's categories (the Elman corpus only).
    if is_elman:
        categories = category_structure(states, text)
        if "skipped" in categories:
            notes.append(f"word categories skipped: {categories['skipped']}")
        else:
            scores, details["structures"] = structure_metrics(states, init_states, text)
            metrics.update(scores)
            details["categories"] = categories
    else:
        notes.append("word categories skipped: the data is not the Elman corpus")

    # Memory probe.
    max_lag = max(1, min(2 * seq_len, split // 4))
    memory = memory_probe(states, ids, split, max_lag, vocab.size)
    metrics["memory_lag1_accuracy"] = memory["accuracy"][0]
    metrics["memory_span"] = memory["span"]
    metrics["memory_chance"] = memory["chance"]
    details["memory_probe"] = memory
    if init_states is not None:
        init_memory = memory_probe(init_states, ids, split, max_lag, vocab.size)
        metrics["memory_lag1_accuracy_init"] = init_memory["accuracy"][0]
        metrics["memory_span_init"] = init_memory["span"]
        details["memory_probe_init"] = {
            k: init_memory[k] for k in ("accuracy", "span", "lag0_accuracy")
        }

    details["trajectory"] = hidden_trajectory(states, text, split)
    # memory_probe_acc: the probe's accuracy per lag 1 .. max_lag, at the top level so a
    # sweep table can carry the whole curve (as JSON text; only scalars reach summary.json).
    return {**metrics, "memory_probe_acc": memory["accuracy"], "notes": notes, "details": details}


# --------------------------------------------------------------------------------------
# A run directory
# --------------------------------------------------------------------------------------


def scalar_metrics(analysis: dict) -> dict:
    """The top-level scalar entries of an analysis document (what summary.json receives)."""
    return {
        k: v for k, v in analysis.items() if v is None or isinstance(v, bool | int | float | str)
    }


def _recorded_text_sha1(run_dir) -> str | None:
    path = Path(run_dir) / rundir.VOCAB_FILE
    try:
        return read_json(path).get("text_sha1") if path.exists() else None
    except ValueError:
        return None


def analysis_text(corpus: EncodedText, val_fraction: float) -> tuple[str, int]:
    """(text, split): what the analysis reads and where its validation part starts.

    The whole text up to ANALYSIS_MAX_CHARS characters; beyond, an excerpt of that many:
    the end of the training split then the start of the validation split (val_fraction of
    the excerpt, at least 2 characters), decoded from the ids alone.
    """
    n = len(corpus.ids)
    split = len(split_ids(corpus.ids, val_fraction)[0])
    if n <= ANALYSIS_MAX_CHARS:
        return corpus.as_text(), split
    n_val = min(n - split, max(2, int(ANALYSIS_MAX_CHARS * val_fraction)))
    n_train = min(split, ANALYSIS_MAX_CHARS - n_val)
    return corpus.vocab.decode(corpus.ids[split - n_train : split + n_val]), n_train


def analyze_run(run_dir: str | Path, plots: bool = True) -> dict:
    """Analyse a run's last checkpoint; write analysis.json, merge its scalar metrics into
    summary.json and (plots=True) draw the run's plots. Returns the merged summary.

    Works on any run with a checkpoint, including one whose training was interrupted or
    cut off (its summary says "interrupted" or "running"): the analysis describes the
    weights of the last checkpoint, at step ``analysis_step``.
    Raises RunDirError when the directory or its checkpoint is missing.
    """
    run = load_run(run_dir)
    if not run.has_checkpoint:
        raise RunDirError(f"{run_dir}: no checkpoint.npz to analyse")
    params = run.params()
    settings = run.settings
    step = run.checkpoint_step()
    base = {
        "analysis_step": step,
        **gradient_fall(run.diagnostics),
        **gradient_decay(run.diagnostics),
        **jacobian_bound(run.diagnostics, run.activation, run.cell),
    }
    finite = params_are_finite(params)
    base.update(gate_spectral_radii(params) if finite else {})
    if not finite:
        analysis = {**base, "notes": ["the weights are not finite (a diverged run)"], "details": {}}
    elif is_sequence_task(settings):  # copy, adding, memory_capacity: the task's own metrics
        analysis = {**base, **analyze_task_params(params, settings)}
    else:
        corpus = load_corpus(settings.get("data") or {"name": "elman"})
        vocab = Vocab(run.vocab) if run.vocab else corpus.vocab
        missing = sorted(set(corpus.vocab.chars) - set(vocab.chars))
        recorded_sha1 = _recorded_text_sha1(run_dir)
        if recorded_sha1 and recorded_sha1 != corpus.sha1:
            raise RunDirError(
                f"{run_dir}: the text rebuilt from the run's data settings is not the text it "
                "was trained on (vocab.json's text_sha1 differs); was data.path changed since "
                "training?"
            )
        if missing:
            raise RunDirError(
                f"{run_dir}: the text rebuilt from the run's data settings holds characters "
                f"the run's vocab.json lacks ({''.join(missing)[:20]!r}); was data.path "
                "changed since training?"
            )
        text, split = analysis_text(corpus, float(settings.get("val_fraction", 0.1)))
        analysis = {**base, **analyze_params(params, settings, text, vocab, split=split)}
    if run.gated:
        analysis["notes"] = [*analysis.get("notes", []), GATED_BOUND_NOTE]
    run_dir = Path(run_dir)
    summary = rundir.read_json_or_none(run_dir / rundir.SUMMARY_FILE) or {}
    # The analysis names the run and step it describes: collect and write_summary merge it
    # into a summary only when both match (no analysis of another run or step leaks in).
    analysis = {"run_id": summary.get("run_id"), "steps_done": step, **analysis}
    atomic_write_json(run_dir / rundir.ANALYSIS_FILE, analysis)
    summary = rundir.write_summary(run_dir, summary)
    # The whole key=value dump for train.log only (conf/hydra/job_logging: rnn_lab.detail's
    # INFO lines stay off the terminal); one short line for everyone.
    detail_log.info("analysis of %s (step %s): %s", run_dir, step, _metrics_line(analysis))
    log.info("analysis (step %s): %s", step, _headline(analysis, run_dir / rundir.ANALYSIS_FILE))

    if plots:
        from rnn_lab.inspect.plots import plot_run

        log_written(plot_run(run_dir))
    return summary


def analyze_and_plot(run_dir: str | Path, plots: bool = True) -> dict | None:
    """The end of a training run: :func:`analyze_run`, then (plots=True) every plot. A failed
    analysis is logged (:func:`log_failed_analysis`) and does not cost the training-dynamics
    plots. Returns the merged summary, None when the analysis failed.
    (rnn_lab.inspect.analysis_pool does the same on worker processes.)"""
    try:
        summary = analyze_run(run_dir, plots=False)
    except Exception as e:
        log_failed_analysis(run_dir, e)
        summary = None
    if plots:
        from rnn_lab.inspect.plots import plot_run

        log_written(plot_run(run_dir, analysis=summary is not None))
    return summary


# The metrics a run's one-line analysis names (those it has), before the file holding all.
HEADLINE_METRICS = ("vocab_hit_rate", "category_separation", "memory_span", "memory_capacity")


def _headline(analysis: dict, path: Path) -> str:
    """ "vocab_hit_rate=0.880 memory_span=4; 57 metrics in DIR/analysis.json" """
    scalars = scalar_metrics(analysis)
    shown = {k: scalars[k] for k in HEADLINE_METRICS if scalars.get(k) is not None}
    head = _metrics_line(shown)
    return f"{head + '; ' if head else ''}{len(scalars)} metrics in {path}"


def _metrics_line(analysis: dict) -> str:
    parts = []
    for k, v in scalar_metrics(analysis).items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.3f}")
        elif v is not None:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def main_analyze(argv: list[str]) -> int:
    """``rnn-lab analyze RUN_DIR [--no-plots]``: analysis.json, summary metrics, plots."""
    parser = argparse.ArgumentParser(
        prog="rnn-lab analyze",
        description="Analyse a trained run (its last checkpoint): analysis.json, the metrics "
        "merged into summary.json, and the run's plots.",
    )
    parser.add_argument("run_dir", help="a run directory (holds checkpoint.npz)")
    parser.add_argument("--no-plots", action="store_true", help="skip drawing the plots")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"rnn-lab analyze: error: {run_dir} is not a directory", file=sys.stderr)
        return 2
    if not (run_dir / rundir.CHECKPOINT_FILE).exists():
        print(
            f"rnn-lab analyze: error: {run_dir} has no checkpoint.npz (not a run directory, "
            "or its run saved no weights yet)",
            file=sys.stderr,
        )
        return 2
    try:
        analyze_run(run_dir, plots=not args.no_plots)
    except (RunDirError, ValueError) as e:
        print(f"rnn-lab analyze: error: {e}", file=sys.stderr)
        return 2
    analysis = read_json(run_dir / ANALYSIS_FILE)
    print(f"analysis of {run_dir} at step {analysis.get('analysis_step')}:")
    for k, v in scalar_metrics(analysis).items():
        shown = f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else v
        print(f"  {k:34s} {shown}")
    for note in analysis.get("notes", []):
        print(f"  note: {note}")
    return 0
