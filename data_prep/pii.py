"""PII redaction: each detected value becomes a typed placeholder ("<EMAIL>", "<PHONE>", ...), counted per type.

Detectors run in the order EMAIL, IBAN, CARD, IP, PHONE, then the recipe's extra patterns; each searches only the
gaps the earlier ones left (claimed spans act as word boundaries), and existing placeholders are claimed up front.
Validated kinds: CARD Luhn, IBAN mod-97 (trailing groups dropped until it passes), IPv4 octets <= 255, IPv6 via
`ipaddress` (constants like `::1` and digit-free forms left alone). PHONE takes 7-15 digits but not dates,
decimals, versions or thousands groupings. Near-misses of IBAN / IPv4 are claimed and kept verbatim.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

PII_TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "IP")

_DIGIT = re.compile(r"[0-9]")

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_][\w-]*\.)+[A-Za-z]{2,63}(?![\w-]|\.[^\W_])")
_IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.ASCII | re.IGNORECASE)
_CARD = re.compile(
    r"(?<![\w+])[2-6](?:[0-9]{12,18}"  # contiguous
    r"|[0-9]{3}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,4}(?:\1[0-9]{3})?"  # 4-4-4-1..4(-3)
    r"|[0-9]{3}([ -])[0-9]{6}\2[0-9]{4,5})(?![0-9])",  # 4-6-4/5 (Diners, Amex)
    re.ASCII,
)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-F]{0,4}:){2,7}(?:[0-9A-F]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![\w:]|\.[0-9])",
    re.ASCII | re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9])", re.ASCII)
_PHONE = re.compile(
    r"(?<![\w+#$€£¥.,:/@-])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,5}\)[ .-]?)?"
    r"[0-9]{1,14}(?:[ .-][0-9]{1,14}){0,7}(?![\w/:@]|[.,-][0-9])",
    re.ASCII,
)
_DATE_LIKE = re.compile(
    r"(?:19|20)[0-9]{2}([-.])[0-9]{1,2}\1[0-9]{1,2}"  # 2022-03-15
    r"|[0-9]{1,2}([-.])[0-9]{1,2}\2(?:19|20)[0-9]{2}"  # 15.03.2022, 03-15-2022
    r"|(?:19|20)[0-9]{2}-(?:19|20)[0-9]{2}"  # 1990-2022
)
_THOUSANDS = re.compile(r"([1-9][0-9]{0,2})([ .])[0-9]{3}(?:\2[0-9]{3})*")


@dataclass(frozen=True)
class Redaction:
    """One detected value: its span in the input and its type (never the value, so it is safe to log)."""

    start: int
    end: int
    kind: str


# A check takes a candidate match and returns how many of its leading characters are PII,
# 0 to claim the candidate as non-PII (kept verbatim, hidden from later detectors), or None to ignore it.
Check = Callable[[str], int | None]


class _Detector(NamedTuple):
    kind: str
    pattern: re.Pattern[str]
    check: Check | None = None  # None: every match is PII
    min_digits: int = 0  # skip texts with fewer digits than any match has
    needs: str = ""  # skip texts without this character


def _luhn_ok(digits: str) -> bool:
    doubled = sum(sum(divmod(2 * int(d), 10)) for d in digits[-2::-2])
    return (sum(int(d) for d in digits[-1::-2]) + doubled) % 10 == 0


def _check_card(value: str) -> int | None:
    return len(value) if _luhn_ok(re.sub(r"[ -]", "", value)) else None


def _iban_ok(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _check_iban(value: str) -> int:
    groups = value.upper().split(" ")
    for n in range(len(groups), 0, -1):  # drop trailing groups the pattern may have swallowed
        if len("".join(groups[:n])) < 15:
            break
        if _iban_ok("".join(groups[:n])):
            return len(" ".join(groups[:n]))
    return 0


def _check_ipv4(value: str) -> int:
    return len(value) if all(int(octet) <= 255 for octet in value.split(".")) else 0


def _check_ipv6(value: str) -> int | None:
    if sum(1 for group in value.split(":") if group) < 2 or not _DIGIT.search(value):
        return None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return len(value)


def _check_phone(value: str) -> int | None:
    if not 7 <= len(_DIGIT.findall(value)) <= 15 or _DATE_LIKE.fullmatch(value):
        return None
    if "." in value:
        groups = re.split(r"[ .-]", value)
        if value.count(".") == 1 or any(len(g) < 2 for g in groups[1:]):  # decimal or version string
            return None
    thousands = _THOUSANDS.fullmatch(value)
    if thousands and (len(thousands[1]) < 3 or value.endswith("000")):
        return None
    return len(value)


_BUILTIN = {  # in detection order
    "EMAIL": [_Detector("EMAIL", _EMAIL, needs="@")],
    "IBAN": [_Detector("IBAN", _IBAN, _check_iban, min_digits=2)],
    "CARD": [_Detector("CARD", _CARD, _check_card, min_digits=13)],
    "IP": [_Detector("IP", _IPV6, _check_ipv6, 1, ":"), _Detector("IP", _IPV4, _check_ipv4, 4, ".")],
    "PHONE": [_Detector("PHONE", _PHONE, _check_phone, min_digits=7)],
}


class Redactor:
    """Finds PII of the chosen types (plus recipe patterns) and replaces it with typed placeholders."""

    def __init__(self, types: Iterable[str] = PII_TYPES, extra_patterns: Mapping[str, str] | None = None) -> None:
        """`extra_patterns`: {"EMPLOYEE_ID": r"EMP-\\d{6}"}; a bad name or regex raises ValueError naming the key."""
        wanted = set(types)
        if unknown := wanted - set(PII_TYPES):
            raise ValueError(f"unknown PII types {sorted(unknown)}; expected some of {PII_TYPES}")
        self._detectors = [d for kind in _BUILTIN if kind in wanted for d in _BUILTIN[kind]]
        for kind, pattern in (extra_patterns or {}).items():
            if not re.fullmatch(r"\w+", kind):
                raise ValueError(f"PII pattern name {kind!r} must be letters, digits or underscores")
            try:
                self._detectors.append(_Detector(kind, re.compile(pattern)))
            except re.error as err:
                raise ValueError(f"invalid regex for PII pattern {kind!r}: {err}") from err
        names = dict.fromkeys([*PII_TYPES, *(d.kind for d in self._detectors)])
        self._placeholder = re.compile("<(?:" + "|".join(map(re.escape, names)) + ")>")

    def find(self, text: str) -> list[Redaction]:
        """The PII spans of one detection pass over `text`, in order and non-overlapping."""
        claimed: list[tuple[int, int, str | None]] = []  # kind None: claimed but kept verbatim
        if "<" in text:
            claimed = [(m.start(), m.end(), None) for m in self._placeholder.finditer(text)]
        digits = len(_DIGIT.findall(text))
        for detector in self._detectors:
            if digits < detector.min_digits or (detector.needs and detector.needs not in text):
                continue
            found = list(self._search(detector, text, claimed))
            if found:
                claimed = sorted(claimed + found)
        return [Redaction(start, end, kind) for start, end, kind in claimed if kind]

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with each PII value replaced by "<KIND>", and the counts per kind; passes repeat until one finds
        nothing (a placeholder can complete a neighbour's boundary), which makes redaction idempotent."""
        counts: Counter[str] = Counter()
        while found := self.find(text):
            parts, pos = [], 0
            for r in found:
                parts += [text[pos : r.start], f"<{r.kind}>"]
                pos = r.end
                counts[r.kind] += 1
            parts.append(text[pos:])
            text = "".join(parts)
        return text, counts

    @staticmethod
    def _search(
        detector: _Detector, text: str, claimed: list[tuple[int, int, str | None]]
    ) -> Iterator[tuple[int, int, str | None]]:
        """Matches in the unclaimed gaps, each searched as its own string (claimed spans act as boundaries)."""
        for gap_start, gap_end in _gaps(claimed, len(text)):
            for m in detector.pattern.finditer(text[gap_start:gap_end]):
                if m.start() == m.end():
                    continue
                n = detector.check(m[0]) if detector.check else len(m[0])
                if n is None:
                    continue
                start = gap_start + m.start()
                yield (start, start + n, detector.kind) if n else (start, gap_start + m.end(), None)


def _gaps(spans: list[tuple[int, int, str | None]], length: int) -> Iterator[tuple[int, int]]:
    pos = 0
    for start, end, _ in spans:
        if start > pos:
            yield pos, start
        pos = end
    if pos < length:
        yield pos, length


def redact_messages(redactor: Redactor, messages: list[dict]) -> tuple[list[dict], Counter[str]]:
    """Redact every text a message carries (content, reasoning_content, tool-call arguments) into new dicts;
    return them and the total counts per kind."""
    redacted, total = [], Counter()

    def clean(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        out, counts = redactor.redact(text)
        total.update(counts)
        return out

    for message in messages:
        message = {**message, "content": clean(message.get("content"))}
        if "reasoning_content" in message:
            message["reasoning_content"] = clean(message["reasoning_content"])
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [_clean_call(call, clean) for call in message["tool_calls"]]
        redacted.append(message)
    return redacted, total


def _clean_call(call: Any, clean: Any) -> Any:
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        function = call["function"]
        return {**call, "function": {**function, "arguments": clean(function.get("arguments"))}}
    return call
