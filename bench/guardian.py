"""What the guardian costs per text and per streamed token, and how often it fires on benign text.

``Matcher.scan`` (1,000 phrase rules and a PII rule with all 11 detectors)
against an ``re`` alternation of the same phrases on ~200 B and ~2 KB chat texts, with and
without an inserted PII value and phrase (and whether both are caught); ``StreamFilter.feed``
on token-sized pieces (time, hold-back, nothing leaked); a semantic rule at 1 and 2 threads;
false positives of the default pack and of the 1,000 phrases on 138,725 real chat turns.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import _harness as h
from edged.errors import ModelError
from edged.guardian import normalize as nz
from edged.guardian.engine import RuleGuardian
from edged.guardian.matcher import Finding, Matcher
from edged.guardian.rules import PII_NAMES, Pack, Rule, load_packs
from edged.guardian.stream import StreamFilter
from tests.fixtures.benign.corpus import load_benign

ROOT, SEED = h.ROOT, h.SEED
DEFAULT_PACK = ROOT / "configs" / "guardian" / "default.toml"
PAYLOAD_LIMIT = 65_536  # bytes; ingress refuses larger payloads before parsing
CHARS_PER_TOKEN = 4
TOKENS_PER_S = 135.0
SCAN_P99_GOAL_US = {200: 50.0, 2000: 200.0}
FEED_MEAN_GOAL_US = 20.0

# bench/data/guardian.json: blocklist words, one synthetic PII value per detector, and the
# flagged corpus values a person reviewed (real personal data is a true positive).
DATA = json.loads((ROOT / "bench" / "data" / "guardian.json").read_text(encoding="utf-8"))
SINGLE, ADJECTIVES, NOUNS, VERBS = (
    " ".join(DATA["phrase_words"][k]).split() for k in ("single", "adjectives", "nouns", "verbs")
)
PII_SAMPLES: dict[str, str] = DATA["pii_samples"]
DETECTORS = list(PII_SAMPLES)
REAL_PII: dict[str, str] = DATA["real_pii"]
REVIEWED_BENIGN: dict[str, str] = DATA["reviewed_benign"]
PII_RULE = Rule(id="pii.all", kind="pii", action="redact", applies_to="both", detectors=PII_NAMES)
SEMANTIC_RULE = Rule(
    id="semantic.self-harm",
    kind="semantic",
    action="force_local",
    applies_to="input",
    threshold=0.6,
    examples=("I want to hurt myself", "how can I end my life", "I don't want to live anymore"),
)


def make_phrases(n: int = 1000, seed: int = SEED) -> list[str]:
    """``n`` distinct phrases (after normalization too): all of SINGLE, then 2-, 3- and 4-word
    phrases in proportion 40 : 34 : 20."""
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


def sized_texts(corpus: Sequence[str], target: int, count: int) -> list[str]:
    """``count`` texts of about ``target`` bytes: consecutive turns joined from evenly spaced
    starting points, cut at the last space before ``target``."""
    out = []
    for k in range(count):
        i = k * (len(corpus) // count)
        s = corpus[i]
        while len(s) < target:
            i += 1
            s += " " + corpus[i % len(corpus)]
        cut = s.rfind(" ", 0, target + 1)
        out.append(s[:cut] if cut > target * 0.8 else s[:target])
    return out


def insert(text: str, phrase: str | None, value: str | None) -> tuple[str, int, int]:
    """``text`` with ``phrase`` at about 1/3 and ``value`` at about 2/3, on word boundaries,
    and where each starts (-1 when absent)."""
    a, b = (max(text.rfind(" ", 0, int(len(text) * f)), 0) for f in (1 / 3, 2 / 3))
    head, mid = text[:a], text[a:b]
    p_at = v_at = -1
    if phrase is not None:
        p_at = len(head) + 1
        head += f" {phrase} "
    if value is not None:
        v_at = len(head) + len(mid) + 1
        mid += f" {value} "
    return head + mid + text[b:], p_at, v_at


def pieces(text: str) -> list[str]:
    """Token-sized pieces: each word with its leading space, whole up to 6 characters, longer
    ones cut into runs of 4."""
    out = []
    for w in re.findall(r"\s*\S+|\s+$", text):
        if len(w) <= 6:
            out.append(w)
        else:
            out.extend(w[i : i + CHARS_PER_TOKEN] for i in range(0, len(w), CHARS_PER_TOKEN))
    return out


def stats(xs: Sequence[float], key: str, scale: float = 1.0) -> dict[str, float]:
    """p50, p99 and mean of ``xs`` / ``scale``, named ``key`` with the statistic in it."""
    a = np.asarray(xs, dtype=np.float64) / scale
    vals = (*np.percentile(a, [50, 99]), a.mean())
    return {key.format(q): float(v) for q, v in zip(("p50", "p99", "mean"), vals, strict=True)}


def rate_row(k: int, n: int, z: float = 1.959963984540054) -> dict[str, float]:
    """k of n with its 95% Wilson score interval."""
    p, d = k / n, 1 + z * z / n
    c, w = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return dict(n=n, flagged=k, rate=p, wilson_lo=max(0.0, c - w), wilson_hi=min(1.0, c + w))


def say(what: str, value: float, limit: float) -> None:
    print(f"{what}: {value:.1f} us (<= {limit:g}: {h.goal(value, limit)})")


def bench_texts(
    texts: list[str], matcher: Matcher, baseline: re.Pattern[str], rounds: tuple[int, int]
) -> dict[str, float]:
    """scan on every text for ``rounds[0]`` rounds, and the re baseline right after it on the
    same text in the first ``rounds[1]``."""
    scan: list[int] = []
    base: list[int] = []
    clock = time.perf_counter_ns
    gc.collect()
    for r in range(rounds[0]):
        for t in texts if r % 2 == 0 else texts[::-1]:
            t0 = clock()
            matcher.scan(t)
            scan.append(clock() - t0)
            if r < rounds[1]:
                t0 = clock()
                list(baseline.finditer(t))
                base.append(clock() - t0)
    row = {"bytes_mean": float(np.mean([len(t.encode()) for t in texts])), "texts": len(texts)}
    row |= {"samples": len(scan), "re_samples": len(base)}
    row |= stats(scan, "scan_{}_us", 1000) | stats(base, "re_{}_us", 1000)
    for q in ("p50", "p99"):
        row[f"ratio_scan_re_{q}"] = row[f"scan_{q}_us"] / row[f"re_{q}_us"]
    return row


def caught(
    matcher: Matcher, texts: Sequence[str], phrases: Sequence[str]
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Texts with a phrase and a PII value inserted, and, per detector, whether scan found the
    value (its label, at its start) and the phrase (its rule, at its start)."""
    out = []
    per = {n: {"n": 0, "value": 0, "phrase": 0} for n in PII_SAMPLES}
    for k, t in enumerate(texts):
        det, pi = DETECTORS[k % len(DETECTORS)], (k * 7) % len(phrases)
        text, p_at, v_at = insert(t, phrases[pi], PII_SAMPLES[det])
        out.append(text)
        findings, _ = matcher.scan(text)
        rule = f"phrase.{pi:04d}"
        per[det]["n"] += 1
        per[det]["value"] += any(f.label == det and f.start == v_at for f in findings)
        per[det]["phrase"] += any(f.rule_id == rule and f.start == p_at for f in findings)
    return out, per


def bench_stream(matcher: Matcher, texts: Sequence[str]) -> dict[str, Any]:
    """Per-feed time, and hold-back per piece: the characters that arrive after the piece's
    last one before it is released."""
    feed_ns: list[int] = []
    hold: list[float] = []
    n_pieces = n_chars = blocked = 0
    clock = time.perf_counter_ns
    gc.collect()
    for t in texts:
        filt = StreamFilter(matcher)
        ends: list[int] = []
        released: list[int] = []  # characters fed, and released, after each feed
        pos = 0
        for p in pieces(t):
            t0 = clock()
            step = filt.feed(p)
            feed_ns.append(clock() - t0)
            if step.blocked_by:  # a phrase in the chat itself ("classified"): stop, as edged
                blocked += 1
                break
            pos += len(p)
            ends.append(pos)
            released.append(pos - filt.held_chars)
        else:
            filt.finish()
        n_pieces += len(ends)
        n_chars += pos
        # piece k's last character is out after the first feed j whose release reaches it
        stops = np.append(ends, pos)[np.searchsorted(released, ends)]
        hold.extend((stops - np.asarray(ends)).tolist())
    out: dict[str, Any] = {"texts": len(texts), "feeds": len(feed_ns)}
    out |= {"chars_per_piece": n_chars / n_pieces} | stats(feed_ns, "feed_{}_us", 1000)
    for k, chars in {"p50": h.pct(hold, 50), "p99": h.pct(hold, 99), "max": max(hold)}.items():
        tokens = float(chars or 0) / CHARS_PER_TOKEN
        out |= {f"hold_{k}_chars": float(chars or 0), f"hold_{k}_tokens": tokens}
        out[f"hold_{k}_ms"] = tokens * 1000 / TOKENS_PER_S
    out["held_share"] = sum(1 for x in hold if x > 0) / len(hold)
    out["blocked_texts"] = blocked
    return out


def streamed(matcher: Matcher, text: str, finish: bool) -> tuple[str, list[str]]:
    """What the stream filter released before a step blocked (with ``finish``: and at the
    end), and the rules that blocked."""
    filt = StreamFilter(matcher)
    out = []
    for p in [*pieces(text), None] if finish else pieces(text):
        step = filt.feed(p) if p is not None else filt.finish()
        if step.blocked_by:
            return "".join(out), step.blocked_by
        out.append(step.release)
    return "".join(out), []


def stream_leaks(matcher: Matcher, texts: Sequence[str], phrases: Sequence[str]) -> dict[str, Any]:
    """Stream texts with a PII value inserted (must be redacted, not even half of it
    released) and texts with a phrase inserted (must stop before the phrase starts)."""
    whole, half, unredacted, stopped = (Counter[str]() for _ in range(4))
    not_blocked = late = 0
    for k, t in enumerate(texts):
        det = DETECTORS[k % len(DETECTORS)]
        value = PII_SAMPLES[det]
        # a phrase in the value ("PRIVATE KEY") or in the chat stops the stream
        released, blocked_by = streamed(matcher, insert(t, None, value)[0], finish=True)
        if value in released:
            whole[det] += 1
        if value[: max(4, len(value) // 2)] in released:
            half[det] += 1
        if blocked_by:
            stopped[f"{det} by {','.join(blocked_by)}"] += 1
        elif f"[REDACTED:{det}]" not in released:
            unredacted[det] += 1
        text, p_at, _ = insert(t, phrases[(k * 13) % len(phrases)], None)
        released, blocked_by = streamed(matcher, text, finish=False)
        not_blocked += not blocked_by
        late += "[REDACTED:" not in released and len(released) > p_at
    return {
        "texts": len(texts),
        "pii_value_released_whole": dict(whole),
        "pii_value_first_half_released": dict(half),
        "pii_not_redacted": dict(unredacted),
        "pii_stream_stopped": dict(stopped),
        "phrase_not_blocked": not_blocked,
        "phrase_partly_released_before_block": late,
    }


def bench_semantic(corpus: Sequence[str], n_inputs: int, rounds: int) -> dict[str, Any]:
    """check_text with one semantic rule on corpus turns of 18-22 words, MiniLM at 1 and at
    2 threads, interleaved."""
    from edged.embeddings.minilm import MiniLMEmbedder

    inputs = [t for t in corpus if 18 <= len(t.split()) <= 22]
    inputs = inputs[:: max(1, len(inputs) // n_inputs)][:n_inputs]
    models, pack = ROOT / "models", [Pack(name="semantic", rule=(SEMANTIC_RULE,))]
    embedders = {
        n: MiniLMEmbedder.from_manifest(models / "manifest.toml", models, threads=n) for n in (1, 2)
    }
    guardians = {n: RuleGuardian(pack, e) for n, e in embedders.items()}
    ms: dict[int, list[float]] = {1: [], 2: []}
    fired = Counter[int]()
    try:
        for g in guardians.values():  # warm-up
            for t in inputs[:5]:
                g.check_text(t, "input")
        for r in range(rounds):
            for i, t in enumerate(inputs):
                for n in (1, 2) if (i + r) % 2 == 0 else (2, 1):
                    t0 = time.perf_counter_ns()
                    o = guardians[n].check_text(t, "input")
                    ms[n].append((time.perf_counter_ns() - t0) / 1e6)
                    if r == 0 and o.action != "allow":
                        fired[n] += 1
    finally:
        for g in guardians.values():
            g.close()
    threads = {f"threads{n}": stats(ms[n], "{}_ms") | {"fired": fired[n]} for n in (1, 2)}
    return {"inputs": len(inputs)} | threads


def judge(text: str, findings: Sequence[Finding]) -> tuple[str, str]:
    """('real' | 'benign' | 'unreviewed', why) for one flagged text."""
    values = [text[f.start : f.end] for f in findings]
    if any(v in REAL_PII for v in values):
        return "real", REAL_PII.get(values[0], "real PII among other findings")
    if all(v in REVIEWED_BENIGN for v in values):
        return "benign", REVIEWED_BENIGN[values[0]]
    return "unreviewed", "not reviewed: counted as a false positive"


def fp_default(texts: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """The default pack on every turn, both directions; each flagged text judged."""
    guardian = RuleGuardian(load_packs([DEFAULT_PACK]))
    out: dict[str, Any] = {}
    examples: dict[int, dict[str, Any]] = {}
    try:
        for direction in ("input", "output"):
            real, labels, rule_ids, n = 0, Counter[str](), Counter[str](), len(texts)
            outcomes = ((i, t, guardian.check_text(t, direction)) for i, t in texts)
            flagged = [(i, t, o) for i, t, o in outcomes if o.action != "allow"]
            for i, t, o in flagged:
                verdict, why = judge(t, o.findings)
                real += verdict == "real"
                labels.update(f.label for f in o.findings)
                rule_ids.update(o.rules)
                values = [f"{f.label}: {t[f.start : f.end]}" for f in o.findings]
                examples.setdefault(i, dict(index=i, verdict=verdict, why=why, values=values))
            out[direction] = {
                "raw": rate_row(len(flagged), n),
                "true_positive_texts": real,
                "excluding_true_positives": rate_row(len(flagged) - real, n - real),
                "labels": dict(labels.most_common()),
                "rules": dict(rule_ids.most_common()),
            }
    finally:
        guardian.close()
    return out | {"examples": [examples[i] for i in sorted(examples)]}


def fp_phrases(texts: Sequence[tuple[int, str]], phrases: Sequence[str]) -> dict[str, Any]:
    """The 1,000 phrases on every turn (input): the texts blocked, by phrase and phrase length."""
    guardian = RuleGuardian([Pack(name="phrases", rule=tuple(phrase_rules(phrases)))])
    try:
        outcomes = (guardian.check_text(t, "input") for _, t in texts)
        blocked = [o.rules for o in outcomes if o.action != "allow"]
    finally:
        guardian.close()
    phrase = {f"phrase.{i:04d}": p for i, p in enumerate(phrases)}
    fired = Counter(r for rules in blocked for r in rules)
    longest = Counter(max(len(phrase[r].split()) for r in rules) for rules in blocked)
    return rate_row(len(blocked), len(texts)) | {
        "phrases_that_fired": len(fired),
        "top": {f"{r} {phrase[r]!r}": c for r, c in fired.most_common(12)},
        "texts_by_phrase_words": dict(sorted(longest.items())),  # by the longest phrase fired
    }


def main() -> int:
    ap = h.parser(__doc__, "guardian")
    ap.add_argument("--quick", action="store_true", help="fewer texts and rounds, 1/10 corpus")
    ap.add_argument("--texts", type=int, default=None, help="texts per size (default 300)")
    args = ap.parse_args()
    n_texts = args.texts or (60 if args.quick else 300)
    started = time.perf_counter()
    corpus, phrases = load_benign(), make_phrases()
    rules = [*phrase_rules(phrases), PII_RULE]
    matcher_in, matcher_out = Matcher(rules, "input"), Matcher(rules, "output")
    baseline = re.compile("|".join(re.escape(p) for p in phrases), re.IGNORECASE)
    f: dict[str, Any] = {"seed": SEED, "corpus_turns": len(corpus), "texts_per_size": n_texts}
    f["phrases_by_words"] = dict(Counter(len(p.split()) for p in phrases))
    f |= {"caught": {}, "texts": {}, "stream": {}}
    plain: dict[int, list[str]] = {}
    # per size: rounds of scan, and how many of them with the re baseline
    rounds = {200: (3, 1), 2000: (2, 1)} if args.quick else {200: (20, 3), 2000: (8, 1)}
    for size, n_rounds in rounds.items():
        plain[size] = sized_texts(corpus, size, n_texts)
        inserted, f["caught"][str(size)] = caught(matcher_in, plain[size], phrases)
        for name, texts in (("plain", plain[size]), ("inserted", inserted)):
            f["texts"][f"{size}_{name}"] = bench_texts(texts, matcher_in, baseline, n_rounds)
    for size, limit in SCAN_P99_GOAL_US.items():
        say(f"scan p99 at {size} B", f["texts"][f"{size}_plain"]["scan_p99_us"], limit)

    for size, texts in plain.items():
        f["stream"][str(size)] = bench_stream(matcher_out, texts)
    say("stream feed mean at 2 KB", f["stream"]["2000"]["feed_mean_us"], FEED_MEAN_GOAL_US)
    f["stream_leaks"] = stream_leaks(matcher_out, plain[200] + plain[2000], phrases)
    try:
        f["semantic"] = bench_semantic(corpus, 40 if args.quick else 200, 1 if args.quick else 2)
    except ModelError as e:  # edged models fetch minilm-l6-v2-int8 minilm-l6-v2-tokenizer
        f["semantic"] = {"error": str(e)}

    fp_corpus = corpus[::10] if args.quick else corpus
    texts = [(i, t) for i, t in enumerate(fp_corpus) if len(t.encode()) <= PAYLOAD_LIMIT]
    f["fp_default"] = {"skipped_over_limit": len(fp_corpus) - len(texts)} | fp_default(texts)
    f["fp_phrases"] = fp_phrases(texts, phrases)
    ex = f["fp_default"]["input"]["excluding_true_positives"]
    print(f"default pack, input: {ex['flagged']} of {ex['n']} false positives")
    h.write(args, f, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
