"""What the guardian costs per text and per streamed token, and how often it fires on benign text.

  1. rules     ``Matcher.scan`` and ``RuleGuardian.check_text`` with 1,000 phrase rules (block)
               and one PII rule with all 11 detectors (redact), on ~200-byte and ~2 KB texts
               cut from a real chat corpus, as they are and with a PII value and a phrase
               inserted (and whether both were caught);
  2. baseline  stdlib ``re``: the 1,000 phrases escaped, joined with ``|``, ``re.IGNORECASE``,
               ``finditer`` over the same texts, in the same loop;
  3. stream    ``StreamFilter.feed`` on ~4-character pieces: time per call, and how many
               characters arrive before a piece is released;
  4. semantic  ``check_text`` with one semantic rule (MiniLM int8), 1 and 2 threads;
  5. benign    how often the default pack and the 1,000 phrases fire on 138,725 real chat
               turns (Wilson 95% interval), the rules that fired and the flagged texts, each
               judged real PII or not.

Texts, phrases and insertions are deterministic (fixed offsets, a seeded generator).

    .venv/bin/python bench/guardian.py [--quick] [--texts 300]
"""

from __future__ import annotations

import gc
import json
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import _harness as h
from edged.errors import ModelError
from edged.guardian import normalize as nz
from edged.guardian.engine import RuleGuardian
from edged.guardian.matcher import Finding, Matcher
from edged.guardian.pii import shape as pii_shape
from edged.guardian.rules import PII_NAMES, Direction, Pack, Rule, load_packs
from edged.guardian.stream import StreamFilter
from tests.fixtures.benign.corpus import load_benign

ROOT, SEED = h.ROOT, h.SEED
DEFAULT_PACK = ROOT / "configs" / "guardian" / "default.toml"
PAYLOAD_LIMIT = 65_536  # bytes; ingress refuses larger payloads before parsing
CHARS_PER_TOKEN = 4
TOKENS_PER_S = 135.0
GOALS = {"p99_us_200": 50.0, "p99_us_2k": 200.0, "stream_us_per_token": 20.0}

# Input data (bench/data/guardian.json): the words an operator's blocklist might hold
# (threats, leaks, internal projects), one synthetic PII value per detector (documentation
# ranges, published example keys), and the corpus values a person reviewed.
DATA = json.loads((ROOT / "bench" / "data" / "guardian.json").read_text(encoding="utf-8"))
SINGLE, ADJECTIVES, NOUNS, VERBS = (
    " ".join(DATA["phrase_words"][k]).split() for k in ("single", "adjectives", "nouns", "verbs")
)
PII_SAMPLES: dict[str, str] = DATA["pii_samples"]
# Real personal data is a true positive; everything else the detectors flag is a false positive.
REAL_PII: dict[str, str] = DATA["real_pii"]
REVIEWED_BENIGN: dict[str, str] = DATA["reviewed_benign"]


def make_phrases(n: int = 1000, seed: int = SEED) -> list[str]:
    """``n`` distinct phrases of 1-4 words (distinct after normalization too), in a fixed order:
    all of SINGLE, then 2-, 3- and 4-word phrases in proportion 40 : 34 : 20."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[tuple[str, ...]] = set()

    def add(p: str) -> None:
        key = nz.phrase_words(p)
        if key and key not in seen:
            seen.add(key)
            out.append(p)

    for w in SINGLE:
        add(w)
    rest = n - len(out)
    quotas = [(2, rest * 40 // 94), (3, rest * 34 // 94)]
    quotas.append((4, rest - sum(q for _, q in quotas)))
    for words, quota in quotas:
        target = len(out) + quota
        while len(out) < target:
            a, v, n1, n2 = (rng.choice(x) for x in (ADJECTIVES, VERBS, NOUNS, NOUNS))
            if words == 2:
                add(f"{a} {n1}")
            elif words == 3:
                add(rng.choice((f"{a} {n1} {n2}", f"{v} the {n1}", f"{v} {a} {n1}")))
            else:
                add(rng.choice((f"how to {v} {n1}", f"{v} the {a} {n1}", f"{a} {n1} {n2} {v}")))
    return out


def phrase_rules(phrases: Sequence[str]) -> list[Rule]:
    return [
        Rule(id=f"phrase.{i:04d}", kind="phrase", action="block", applies_to="both", phrases=(p,))
        for i, p in enumerate(phrases)
    ]


PII_RULE = Rule(id="pii.all", kind="pii", action="redact", applies_to="both", detectors=PII_NAMES)

# --- texts --------------------------------------------------------------------------------


def sized_texts(corpus: Sequence[str], target: int, count: int) -> list[str]:
    """``count`` texts of about ``target`` bytes: consecutive turns joined with a space from
    evenly spaced starting points, cut at the last space before ``target``."""
    stride = len(corpus) // count
    out = []
    for k in range(count):
        i = k * stride
        parts: list[str] = []
        size = -1
        while size < target:
            parts.append(corpus[i % len(corpus)])
            size += len(parts[-1]) + 1
            i += 1
        s = " ".join(parts)
        cut = s.rfind(" ", 0, target + 1)
        out.append(s[:cut] if cut > target * 0.8 else s[:target])
    return out


def _boundary(text: str, frac: float) -> int:
    at = text.rfind(" ", 0, int(len(text) * frac))
    return max(at, 0)


def insert(text: str, phrase: str | None, value: str | None) -> tuple[str, int, int]:
    """``text`` with ``phrase`` at about 1/3 and ``value`` at about 2/3, on word boundaries;
    returns the text and where the phrase and the value start (-1 when absent)."""
    a, b = _boundary(text, 1 / 3), _boundary(text, 2 / 3)
    head, mid, tail = text[:a], text[a:b], text[b:]
    p_at = v_at = -1
    if phrase is not None:
        head += " "
        p_at = len(head)
        head += phrase + " "
    if value is not None:
        mid += " "
        v_at = len(head) + len(mid)
        mid += value + " "
    return head + mid + tail, p_at, v_at


def pieces(text: str) -> list[str]:
    """Token-sized pieces, about 4 characters on average as with a BPE tokenizer on English
    (SmolLM2's gives 4.25 on these texts): each word with its leading space, whole up to 6
    characters, longer ones cut into runs of 4."""
    out = []
    for w in re.findall(r"\s*\S+|\s+$", text):
        if len(w) <= 6:
            out.append(w)
        else:
            out.extend(w[i : i + CHARS_PER_TOKEN] for i in range(0, len(w), CHARS_PER_TOKEN))
    return out


# --- statistics ----------------------------------------------------------------------------


def pct(xs: Sequence[float], q: float) -> float:
    return h.pct(xs, q) or math.nan


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def us_stats(ns: Sequence[int]) -> dict[str, float]:
    us = [x / 1000 for x in ns]
    return {"p50_us": pct(us, 50), "p99_us": pct(us, 99), "mean_us": float(np.mean(us))}


# --- 1 and 2: whole texts ------------------------------------------------------------------


def bench_texts(
    sets: dict[str, list[str]],
    *,
    matcher: Matcher,
    guardian: RuleGuardian,
    baseline: re.Pattern[str],
    rounds: int,
    re_rounds: int,
) -> dict[str, dict[str, float]]:
    """Time scan, check_text and the re baseline on every text, interleaved text by text."""
    out: dict[str, dict[str, float]] = {}
    for name, texts in sets.items():
        scan: list[int] = []
        check: list[int] = []
        base: list[int] = []
        clock = time.perf_counter_ns
        gc.collect()
        for r in range(rounds):
            order = texts if r % 2 == 0 else texts[::-1]
            for t in order:
                t0 = clock()
                matcher.scan(t)
                t1 = clock()
                guardian.check_text(t, "input")
                t2 = clock()
                scan.append(t1 - t0)
                check.append(t2 - t1)
                if r < re_rounds:
                    t3 = clock()
                    list(baseline.finditer(t))
                    base.append(clock() - t3)
        s, c, b = us_stats(scan), us_stats(check), us_stats(base)
        out[name] = {
            "bytes_mean": float(np.mean([len(t.encode()) for t in texts])),
            "texts": len(texts),
            "samples": len(scan),
            **{f"scan_{k}": v for k, v in s.items()},
            **{f"check_{k}": v for k, v in c.items()},
            **{f"re_{k}": v for k, v in b.items()},
            "re_samples": len(base),
            "ratio_scan_re_p50": s["p50_us"] / b["p50_us"],
            "ratio_scan_re_p99": s["p99_us"] / b["p99_us"],
        }
    return out


def caught(
    matcher: Matcher, texts: Sequence[str], phrases: Sequence[str]
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Texts with a phrase and a PII value inserted, and, per detector, whether scan found
    both (a finding with the detector's label starting at the value, the phrase's rule)."""
    out = []
    per: dict[str, dict[str, int]] = {n: {"n": 0, "value": 0, "phrase": 0} for n in PII_SAMPLES}
    names = list(PII_SAMPLES)
    for k, t in enumerate(texts):
        det = names[k % len(names)]
        pi = (k * 7) % len(phrases)
        text, p_at, v_at = insert(t, phrases[pi], PII_SAMPLES[det])
        out.append(text)
        findings, _ = matcher.scan(text)
        row = per[det]
        row["n"] += 1
        if any(f.label == det and f.start == v_at for f in findings):
            row["value"] += 1
        if any(f.rule_id == f"phrase.{pi:04d}" and f.start == p_at for f in findings):
            row["phrase"] += 1
    return out, per


def breakdown(matcher: Matcher, texts: Sequence[str], rounds: int) -> dict[str, float]:
    """Where scan's time goes: the steps of ``Matcher.scan`` on a whole text, each timed on
    its own (p50 microseconds). The phrase and PII steps include their normalization."""
    parts: dict[str, Callable[[str], object]] = {
        "skeleton": nz.skeleton,
        "skeleton+words": lambda t: nz.merged_word_texts(nz.skeleton(t)),
        "phrases": lambda t: matcher._scan_phrases(t, False, []),
        "plain": nz.plain,
        "pii_shape": lambda t: pii_shape(nz.plain(t).text),
        "pii": lambda t: matcher._scan_pii(nz.plain(t), False, []),
        "scan": matcher.scan,
    }
    out = {}
    clock = time.perf_counter_ns
    for name, fn in parts.items():
        ns = []
        for _ in range(rounds):
            for t in texts:
                t0 = clock()
                fn(t)
                ns.append(clock() - t0)
        out[name] = pct(ns, 50) / 1000
    return out


# --- 3: the stream filter --------------------------------------------------------------------


def bench_stream(matcher: Matcher, texts: Sequence[str]) -> dict[str, Any]:
    """Per-feed time and hold-back over ``texts`` fed in token-sized pieces."""
    feed_ns: list[int] = []
    hold_chars: list[int] = []
    n_pieces = 0
    n_chars = 0
    blocked: Counter[str] = Counter()
    worst = (-1, "")
    clock = time.perf_counter_ns
    gc.collect()
    for t in texts:
        filt = StreamFilter(matcher)
        ends: list[int] = []
        released: list[int] = []  # original characters released after each feed
        pos = 0
        for p in pieces(t):
            t0 = clock()
            step = filt.feed(p)
            feed_ns.append(clock() - t0)
            if step.blocked_by:  # a phrase in the chat itself ("classified"): stop, as edged
                blocked.update(step.blocked_by)
                break
            pos += len(p)
            ends.append(pos)
            released.append(pos - filt.held_chars)
        else:
            filt.finish()
        n_pieces += len(ends)
        n_chars += pos
        j = 0
        for k, end in enumerate(ends):
            j = max(j, k)
            while j < len(ends) and released[j] < end:
                j += 1
            hold_chars.append((ends[j] if j < len(ends) else pos) - end)
            if hold_chars[-1] > worst[0]:
                worst = (hold_chars[-1], t[max(0, end - 30) : end + hold_chars[-1]])
    hold = {"p50": pct(hold_chars, 50), "p99": pct(hold_chars, 99), "max": float(max(hold_chars))}
    out: dict[str, Any] = {
        "texts": len(texts),
        "feeds": len(feed_ns),
        "chars_per_piece": n_chars / n_pieces,
        "feed_mean_us": float(np.mean(feed_ns)) / 1000,
        "feed_p50_us": pct(feed_ns, 50) / 1000,
        "feed_p99_us": pct(feed_ns, 99) / 1000,
    }
    for k, chars in hold.items():  # in characters, tokens and ms at TOKENS_PER_S
        out[f"hold_{k}_chars"] = chars
        out[f"hold_{k}_tokens"] = chars / CHARS_PER_TOKEN
        out[f"hold_{k}_ms"] = chars / CHARS_PER_TOKEN * 1000 / TOKENS_PER_S
    out["held_share"] = sum(1 for x in hold_chars if x > 0) / len(hold_chars)
    out["longest_hold_text"] = worst[1]
    out["blocked_texts"], out["blocked_by"] = sum(blocked.values()), dict(blocked)
    return out


def streamed(matcher: Matcher, text: str, finish: bool) -> tuple[list[str], list[str]]:
    """What the stream filter released piece by piece (up to and including the step that
    blocked, if one did; then ``finish``'s), and the rules that blocked."""
    filt = StreamFilter(matcher)
    out = []
    for p in [*pieces(text), None] if finish else pieces(text):
        step = filt.feed(p) if p is not None else filt.finish()
        out.append(step.release)
        if step.blocked_by:
            return out, step.blocked_by
    return out, []


def stream_leaks(matcher: Matcher, texts: Sequence[str], phrases: Sequence[str]) -> dict[str, Any]:
    """Stream texts with a PII value inserted (must be redacted, not even half of it
    released) and texts with a phrase inserted (must stop before the phrase starts)."""
    names = list(PII_SAMPLES)
    leaks: Counter[str] = Counter()
    half: Counter[str] = Counter()
    missed_redaction: Counter[str] = Counter()
    stopped: Counter[str] = Counter()
    not_blocked = late_block = 0
    for k, t in enumerate(texts):
        det = names[k % len(names)]
        value = PII_SAMPLES[det]
        # a phrase in the value ("PRIVATE KEY") or the chat stops the stream
        out, blocked_by = streamed(matcher, insert(t, None, value)[0], finish=True)
        released = "".join(out)
        if value in released:
            leaks[det] += 1
        if value[: max(4, len(value) // 2)] in released:
            half[det] += 1
        if blocked_by:
            stopped[f"{det} by {','.join(blocked_by)}"] += 1
        elif f"[REDACTED:{det}]" not in released:
            missed_redaction[det] += 1

        text, p_at, _ = insert(t, phrases[(k * 13) % len(phrases)], None)
        got, blocked = streamed(matcher, text, finish=False)
        if not blocked:
            not_blocked += 1
        rel = "".join(got[:-1] if blocked else got)  # what left before the blocking step
        if "[REDACTED:" not in rel and len(rel) > p_at:
            late_block += 1
    return {
        "texts": len(texts),
        "pii_value_released_whole": dict(leaks),
        "pii_value_first_half_released": dict(half),
        "pii_not_redacted": dict(missed_redaction),
        "pii_stream_stopped": dict(stopped),
        "phrase_not_blocked": not_blocked,
        "phrase_partly_released_before_block": late_block,
    }


# --- 4: semantic rule ---------------------------------------------------------------------

SEMANTIC_RULE = Rule(
    id="semantic.self-harm",
    kind="semantic",
    action="force_local",
    applies_to="input",
    threshold=0.6,
    examples=("I want to hurt myself", "how can I end my life", "I don't want to live anymore"),
)


def bench_semantic(inputs: Sequence[str], rounds: int) -> dict[str, Any]:
    from edged.embeddings.minilm import MiniLMEmbedder

    guardians: dict[int, RuleGuardian] = {}
    load_ms: dict[int, float] = {}
    for threads in (1, 2):
        t0 = time.perf_counter()
        emb = MiniLMEmbedder.from_manifest(
            ROOT / "models" / "manifest.toml", ROOT / "models", threads=threads
        )
        load_ms[threads] = (time.perf_counter() - t0) * 1000
        guardians[threads] = RuleGuardian([Pack(name="semantic", rule=(SEMANTIC_RULE,))], emb)
    ms: dict[int, list[float]] = {1: [], 2: []}
    fired: Counter[int] = Counter()
    try:
        for g in guardians.values():  # warm-up
            for t in inputs[:5]:
                g.check_text(t, "input")
        for r in range(rounds):
            for i, t in enumerate(inputs):
                order = (1, 2) if (i + r) % 2 == 0 else (2, 1)
                for threads in order:
                    t0 = time.perf_counter_ns()
                    o = guardians[threads].check_text(t, "input")
                    ms[threads].append((time.perf_counter_ns() - t0) / 1e6)
                    if r == 0 and o.action != "allow":
                        fired[threads] += 1
    finally:
        for g in guardians.values():
            g.close()
    words = [len(t.split()) for t in inputs]
    return {
        "inputs": len(inputs),
        "words_mean": float(np.mean(words)),
        **{
            f"threads{n}": {
                "p50_ms": pct(ms[n], 50),
                "p99_ms": pct(ms[n], 99),
                "load_ms": load_ms[n],
                "fired": fired[n],
            }
            for n in (1, 2)
        },
    }


# --- 5: false positives on the benign corpus ----------------------------------------------


def judge(text: str, findings: Sequence[Finding]) -> tuple[str, str]:
    """('real' | 'benign' | 'unreviewed', why) for one flagged text."""
    values = [text[f.start : f.end] for f in findings]
    if values and all(v in REAL_PII for v in values):
        return "real", REAL_PII[values[0]]
    reasons = [REVIEWED_BENIGN.get(v) for v in values]
    if any(v in REAL_PII for v in values):
        return "real", "real PII among other findings"
    if all(reasons):
        return "benign", str(reasons[0])
    return "unreviewed", "not reviewed: counted as a false positive"


def excerpt(text: str, start: int, mark: bool = True) -> str:
    """120 characters of ``text`` around ``start`` (``mark``: "..." first when cut there)."""
    lo = max(0, min(start - 40, len(text) - 120))
    return ("..." if lo and mark else "") + text[lo : lo + 120]


def rate_row(k: int, n: int) -> dict[str, float]:
    lo, hi = wilson(k, n)
    return {
        "n": n,
        "flagged": k,
        "rate": k / n if n else math.nan,
        "wilson_lo": lo,
        "wilson_hi": hi,
    }


def fp_default(corpus: Sequence[str]) -> dict[str, Any]:
    guardian = RuleGuardian(load_packs([DEFAULT_PACK]))
    result: dict[str, Any] = {"skipped_over_limit": 0}
    flagged_texts: dict[int, list[Finding]] = {}
    try:
        directions: tuple[Direction, ...] = ("input", "output")
        for direction in directions:
            n = flagged = real = 0
            labels: Counter[str] = Counter()
            rule_ids: Counter[str] = Counter()
            for i, t in enumerate(corpus):
                if len(t.encode()) > PAYLOAD_LIMIT:
                    if direction == "input":
                        result["skipped_over_limit"] += 1
                    continue
                n += 1
                o = guardian.check_text(t, direction)
                if o.action == "allow":
                    continue
                flagged += 1
                labels.update(f.label for f in o.findings)
                rule_ids.update(o.rules)
                flagged_texts.setdefault(i, list(o.findings))
                if judge(t, o.findings)[0] == "real":
                    real += 1
            result[direction] = {
                "raw": rate_row(flagged, n),
                "true_positive_texts": real,
                "excluding_true_positives": rate_row(flagged - real, n - real),
                "labels": dict(labels.most_common()),
                "rules": dict(rule_ids.most_common()),
            }
    finally:
        guardian.close()
    examples = []
    for i, findings in sorted(flagged_texts.items()):
        t = corpus[i]
        verdict, why = judge(t, findings)
        values = [f"{f.label}: {t[f.start : f.end]}" for f in findings]
        text = excerpt(t, findings[0].start)
        examples.append(
            {"index": i, "verdict": verdict, "why": why, "values": values, "text": text}
        )
    result["examples"] = examples
    return result


def fp_phrases(corpus: Sequence[str], phrases: Sequence[str]) -> dict[str, Any]:
    guardian = RuleGuardian([Pack(name="phrases", rule=tuple(phrase_rules(phrases)))])
    n = flagged = 0
    fired: Counter[str] = Counter()
    by_words: Counter[int] = Counter()  # texts by the longest phrase that fired in them
    examples: list[str] = []
    try:
        for t in corpus:
            if len(t.encode()) > PAYLOAD_LIMIT:
                continue
            n += 1
            o = guardian.check_text(t, "input")
            if o.action == "allow":
                continue
            flagged += 1
            fired.update(o.rules)
            by_words[max(len(phrases[int(r.split(".")[1])].split()) for r in o.rules)] += 1
            if len(examples) < 5:
                examples.append(excerpt(t, o.findings[0].start, mark=False))
    finally:
        guardian.close()
    by_phrase = {
        f"{rid} {phrases[int(rid.split('.')[1])]!r}": c for rid, c in fired.most_common(12)
    }
    return {
        **rate_row(flagged, n),
        "phrases_that_fired": len(fired),
        "top": by_phrase,
        "texts_by_phrase_words": dict(sorted(by_words.items())),
        "examples": examples,
    }


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = h.parser(__doc__, "guardian")
    ap.add_argument("--quick", action="store_true", help="fewer texts and rounds, 1/10 corpus")
    ap.add_argument("--texts", type=int, default=None, help="texts per size (default 300)")
    args = ap.parse_args()
    quick = bool(args.quick)
    n_texts = args.texts or (60 if quick else 300)
    started = time.perf_counter()
    corpus = load_benign()
    phrases = make_phrases()
    rules = [*phrase_rules(phrases), PII_RULE]
    matcher_in, matcher_out = Matcher(rules, "input"), Matcher(rules, "output")
    guardian = RuleGuardian([Pack(name="bench", rule=tuple(rules))])
    baseline = re.compile("|".join(re.escape(p) for p in phrases), re.IGNORECASE)
    f: dict[str, Any] = {
        "seed": SEED,
        "corpus_turns": len(corpus),
        "texts_per_size": n_texts,
        "phrases_by_words": dict(Counter(len(p.split()) for p in phrases)),
        "caught": {},
        "texts": {},
    }

    # 1 + 2: whole texts, against re
    sets: dict[str, list[str]] = {}
    for size, rounds, re_rounds in (
        (200, 3 if quick else 20, 1 if quick else 3),
        (2000, 2 if quick else 8, 1),
    ):
        plain = sets[f"{size}_plain"] = sized_texts(corpus, size, n_texts)
        inserted, f["caught"][str(size)] = caught(matcher_in, plain, phrases)
        sub = {f"{size}_plain": plain, f"{size}_inserted": inserted}
        sets.update(sub)
        f["texts"] |= bench_texts(
            sub,
            matcher=matcher_in,
            guardian=guardian,
            baseline=baseline,
            rounds=rounds,
            re_rounds=re_rounds,
        )
    for size, limit in (("200", GOALS["p99_us_200"]), ("2000", GOALS["p99_us_2k"])):
        p99 = f["texts"][f"{size}_plain"]["scan_p99_us"]
        print(f"scan p99 at {size} B: {p99:.1f} us (<= {limit:g}: {h.goal(p99, limit)})")
    f["breakdown_2k_p50_us"] = breakdown(matcher_in, sets["2000_plain"][:100], 1 if quick else 3)

    # 3: the stream filter
    f["stream"] = {str(n): bench_stream(matcher_out, sets[f"{n}_plain"]) for n in (200, 2000)}
    mean, limit = f["stream"]["2000"]["feed_mean_us"], GOALS["stream_us_per_token"]
    print(f"stream feed mean at 2 KB: {mean:.1f} us (<= {limit:g}: {h.goal(mean, limit)})")
    texts = sets["200_plain"] + sets["2000_plain"]
    f["stream_leaks"] = stream_leaks(matcher_out, texts, phrases)

    # 4: a semantic rule
    sem_inputs = [t for t in corpus if 18 <= len(t.split()) <= 22]
    n_sem = 40 if quick else 200
    sem_inputs = sem_inputs[:: max(1, len(sem_inputs) // n_sem)][:n_sem]
    try:
        f["semantic"] = bench_semantic(sem_inputs, 1 if quick else 2)
    except ModelError as e:  # edged models fetch minilm-l6-v2-int8 minilm-l6-v2-tokenizer
        f["semantic"] = {"error": str(e)}

    # 5: false positives on the benign corpus
    fp_corpus = corpus[::10] if quick else corpus
    f["fp_default"] = fpd = fp_default(fp_corpus)
    f["fp_phrases"] = fp_phrases(fp_corpus, phrases)
    ex = fpd["input"]["excluding_true_positives"]
    print(f"default pack, input: {ex['flagged']} of {ex['n']} false positives")
    guardian.close()
    h.write(args, f, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
