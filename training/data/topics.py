"""The bundled `text-topics` data set: SYNTHETIC headlines about four topics, generated here.

No download and no real-world text: each row is a template filled from per-topic phrase lists
(subject, action, detail) plus shared filler. It is made hard enough not to be solved by
spotting one word: several words belong to more than one topic ("record", "stock", "cup",
"season", "team", "plant", "chip", "field"), each phrase slot is drawn from another topic's
list with probability MIX, words are dropped at random, and a few labels are flipped.

    python -m training.data.topics            # rewrite training/data/text-topics.csv
    python -m training.data.topics --check    # exit 1 if the shipped file differs
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from pathlib import Path

CSV_PATH = Path(__file__).with_name("text-topics.csv")
SEED = 0
ROWS_PER_TOPIC = 1000
MIX = 0.15  # chance that a phrase slot comes from another topic
LABEL_NOISE = 0.03  # chance that a row's label is replaced by a random other topic
WORD_DROP = 0.03  # chance that each word is left out

# NOTE: fmt: off keeps the phrase lists as compact paragraphs instead of one phrase per line.
# fmt: off
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "sports": {
        "subject": (
            "the home team", "the striker", "the coach", "the captain", "the champions",
            "the veteran goalkeeper", "the young sprinter", "the league leaders",
            "the star player", "the visiting side", "the tennis champion", "the rookie",
        ),
        "action": (
            "won the final", "scored twice", "lost the derby", "signed a new contract",
            "broke the world record", "missed a penalty", "was injured in training",
            "beat the defending champions", "reached the semifinal", "set a new record",
            "drew with their rivals", "retired after the match", "took the gold medal",
        ),
        "detail": (
            "in extra time", "at the stadium", "before a sold out crowd", "on the last lap",
            "in the second half", "after a long season", "at the cup final", "on home turf",
            "during the playoffs", "on a wet pitch", "on the centre court", "in the field",
        ),
    },
    "business": {
        "subject": (
            "the company", "the bank", "investors", "the chief executive", "the retailer",
            "the startup", "shareholders", "the central bank", "the carmaker", "analysts",
            "the chipmaker", "the airline",
        ),
        "action": (
            "reported record profits", "cut interest rates", "raised prices",
            "announced layoffs", "bought a rival", "missed earnings forecasts",
            "sold its stake", "opened a new plant", "raised fresh funding",
            "warned of slower growth", "posted a quarterly loss", "listed its stock",
            "signed a supply deal",
        ),
        "detail": (
            "as shares fell", "after the market closed", "in the third quarter",
            "amid rising inflation", "despite weak demand", "ahead of the merger",
            "on the stock exchange", "this fiscal year", "in Zürich", "after a strong season",
            "in a pitch to investors", "at the annual meeting",
        ),
    },
    "science": {
        "subject": (
            "researchers", "the space agency", "astronomers", "the lab", "a team of biologists",
            "physicists", "the new telescope", "engineers", "the study", "climate scientists",
            "the rover", "chemists",
        ),
        "action": (
            "discovered a new species", "measured the signal", "published the results",
            "launched a satellite", "sequenced the genome", "observed a distant star",
            "tested a faster chip", "developed a vaccine", "detected water",
            "built a quantum computer", "recorded a strong earthquake", "mapped the ocean floor",
            "grew the plant cells",
        ),
        "detail": (
            "in the journal", "after years of data", "using a particle accelerator",
            "in a clinical trial", "on the surface of mars", "at the research station",
            "in the field", "with a new microscope", "in the lab", "during the solar eclipse",
            "near the volcano", "at record temperatures",
        ),
    },
    "food": {
        "subject": (
            "the chef", "the bakery", "the restaurant", "home cooks", "the food critic",
            "the café", "the farmers market", "the pastry team", "the new bistro", "the kitchen",
            "the street vendor", "the winemaker",
        ),
        "action": (
            "served a spicy stew", "baked fresh bread", "won a cooking contest",
            "opened a second location", "added a vegan menu", "roasted the vegetables",
            "shared a soup recipe", "sold out of pies", "grilled the fish",
            "simmered the stock", "perfected the crème brûlée", "picked the grapes",
            "made fresh pasta",
        ),
        "detail": (
            "with garlic and herbs", "for the holiday season", "at the night market",
            "with a cup of flour", "on a low heat", "for the weekend brunch",
            "with seasonal fruit", "in a cast iron pan", "with a pinch of salt",
            "for the harvest festival", "with chili and lime", "in São Paulo",
        ),
    },
}
# fmt: on
TOPICS: tuple[str, ...] = tuple(PHRASES)

OPENERS = ("", "", "", "today", "on monday", "this week", "breaking:", "reports say")
CLOSERS = ("", "", "", "officials said", "according to a statement", "sources say", "on friday")


def _phrase(rng: random.Random, topic: str, slot: str) -> str:
    if rng.random() < MIX:
        topic = rng.choice([t for t in TOPICS if t != topic])
    return rng.choice(PHRASES[topic][slot])


def headline(rng: random.Random, topic: str) -> str:
    """One sentence about `topic`, with the mixing and word dropping described above."""
    subject, action = _phrase(rng, topic, "subject"), _phrase(rng, topic, "action")
    detail = _phrase(rng, topic, "detail") if rng.random() < 0.8 else ""
    opener = rng.choice(OPENERS)
    opener = f"{opener[0].upper()}{opener[1:]}," if opener and not opener.endswith(":") else opener
    parts = [opener, subject, action, detail, rng.choice(CLOSERS)]
    words = [w for w in " ".join(p for p in parts if p).split() if rng.random() >= WORD_DROP]
    text = " ".join(words) or subject
    return text[0].upper() + text[1:] + rng.choice((".", ".", "!", ""))


def generate_rows(seed: int = SEED, per_topic: int = ROWS_PER_TOPIC) -> list[tuple[str, str]]:
    """(text, label) rows, `per_topic` for each topic, in a seeded random order."""
    rng = random.Random(seed)
    rows = []
    for topic in TOPICS:
        for _ in range(per_topic):
            label = topic
            if rng.random() < LABEL_NOISE:
                label = rng.choice([t for t in TOPICS if t != topic])
            rows.append((headline(rng, topic), label))
    rng.shuffle(rows)
    return rows


def csv_text(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("text", "label"))
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.topics", description=__doc__)
    parser.add_argument("--out", type=Path, default=CSV_PATH, help="where to write the CSV")
    parser.add_argument("--check", action="store_true", help="only compare with --out")
    args = parser.parse_args(argv)
    text = csv_text(generate_rows())
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
