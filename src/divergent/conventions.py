"""The project-wide conventions every stage uses: split names, CLI words, id rules."""
from __future__ import annotations

from .errors import DivergentError

TRAIN, HOLDOUT, TEST = "train", "holdout", "test"
SPLITS = (TRAIN, HOLDOUT, TEST)
#: seed of the stratified holdout/test halves of an official test set
SPLIT_SEED = 0
#: bootstrap defaults
N_BOOT = 1000
CI_LEVEL = 0.95
#: --wait defaults (seconds a writing command waits for another writer of the store): commands
#: typed at a prompt refuse at once; long unattended runs (extract, study run) wait
WAIT_INTERACTIVE = 0.0
WAIT_BATCH = 600.0


def check_fit_split(fit_on: str, evaluate_on: str, allow_same: bool = False) -> None:
    """Refuse fitting/selecting on the split that is evaluated (unless overridden)."""
    if fit_on == evaluate_on and not allow_same:
        raise DivergentError(
            f"refusing to fit or select on {fit_on!r}, the split being evaluated",
            "fit on the holdout (--fit-on holdout) and evaluate on test (--split test); "
            "pass --allow-fit-on-eval (allow_fit_on_eval=True) only if you know why",
        )


# ---- names ------------------------------------------------------------------------------
#: longest model / split name, in characters
NAME_MAX = 200
#: characters that render as nothing although Unicode files them under letters or marks
#: (Hangul fillers, Khmer inherent vowels, Mongolian and other variation selectors,
#: the combining grapheme joiner, the braille blank)
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0"
                       + "".join(map(chr, range(0xFE00, 0xFE10))))


def _bad_char(ch: str) -> str | None:
    """Why `ch` may not appear in a name (None when it may)."""
    import unicodedata

    cat = unicodedata.category(ch)
    if cat == "Cc":
        return "a control character"
    if cat == "Cf":
        return "an invisible format or bidirectional-override character"
    if cat in ("Cs", "Co", "Cn"):
        return "a surrogate, private-use or unassigned code point"
    if cat in ("Zl", "Zp"):
        return "a line or paragraph separator"
    if cat == "Zs" and ch != " ":
        return "a space other than the ASCII space"
    if ch in _INVISIBLE or 0xE0100 <= ord(ch) <= 0xE01EF:
        return "an invisible character"
    if ch == "\\":
        return "a backslash"
    return None


def check_name(name, what: str = "model") -> str:
    """The one name rule (models, splits, and every other name a store or study keeps).

    Returns the name normalised to Unicode NFC. Refused: non-strings, empty names, names
    longer than NAME_MAX, leading or trailing whitespace, control (Cc), format / bidi /
    zero-width (Cf), surrogate, private-use and unassigned characters, line and paragraph
    separators, spaces other than U+0020, other invisible characters, backslashes, a
    leading '/', and empty, '.' or '..' path segments.
    """
    import unicodedata

    if not isinstance(name, str):
        raise DivergentError(f"{what} name must be a string, got {type(name).__name__} {name!r}",
                             f"give the {what} name as text")
    if not name.strip():
        raise DivergentError(f"{what} name must not be empty (got {name!r})", f"give a non-empty {what} name")
    name = unicodedata.normalize("NFC", name)
    allowed = "use letters, digits, spaces inside the name and . _ - : /"
    for i, ch in enumerate(name):
        why = _bad_char(ch)
        if why:
            raise DivergentError(
                f"{what} name {name!r} contains {why} (U+{ord(ch):04X} at position {i})",
                f"{allowed}; type the name again rather than pasting it")
    if name != name.strip():
        raise DivergentError(f"{what} name {name!r} has leading or trailing whitespace",
                             f"remove it: {name.strip()!r}")
    if len(name) > NAME_MAX:
        raise DivergentError(f"{what} name is {len(name)} characters long (at most {NAME_MAX})",
                             f"give a shorter {what} name")
    if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise DivergentError(
            f"{what} name {name!r} is not allowed (a leading '/', or an empty, '.' or '..' segment, "
            "could escape the store directory)", f"{allowed}, without '..', '//', or a leading or trailing '/'")
    return name


# ---- threads ----------------------------------------------------------------------------
#: environment variable that sets how many threads the engines and bootstraps use
THREADS_ENV = "DIVERGENT_THREADS"


def threads() -> int:
    """Threads for the exact engines and the count bootstrap: $DIVERGENT_THREADS, else the cores
    this process may run on (os.sched_getaffinity). Results never depend on it."""
    import os

    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise DivergentError(f"{THREADS_ENV}={raw!r} is not a positive whole number",
                                 f"set {THREADS_ENV} to a thread count such as 2, or unset it to use every core")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)
