"""Deterministic train / validation / test splits by a hash of (seed, group key).

Besides the hash split below, a *time split* (``by: "time"``) places a row by its prediction's
``occurred_at``: train before ``validation_from``, validation before ``test_from``, test after.
Every item of one prediction shares its time, so a prediction never straddles two splits, and
nothing in validation or test happened before anything in train (no look-ahead). Gold rows of
the train period go to validation (to test when the validation period is empty).

A row's split depends only on the seed and its *group key* (default the prediction's
``external_id``; ``segment.<key>`` groups by a segment value), never on the other rows, so every
row of a group lands in the same split, an export built twice gives the same splits, and adding
rows never moves old ones.

``group_uniform(seed, key)`` is :mod:`labeling.randomness`'s uniform over a text key: the first
32 bits of md5("<seed>:<key>") divided by 2**32, the same function sampling draws with. The
split is then ``train`` if u < train, ``validation`` if u < train + validation, else ``test``.

Gold rows (predictions that are the source of an item in a published gold-set version) are kept
out of train by default, as whole groups: a group holding a gold row that would fall in train
goes to validation or test instead, in proportion of their shares, chosen by the same u
rescaled (u / train, compared as u < train · share), so the move is deterministic too. With
no validation nor test share it goes to test.

The same function is available as SQL on PostgreSQL (md5 and a bit-string cast) and on SQLite
(a Python function registered on every connection); the tests check all three agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Case, CharField, Expression, F, Q, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce

from .randomness import HashUniform as GroupUniform  # noqa: F401  (the SQL side, for callers)
from .randomness import uniform as group_uniform

SPLITS = ("train", "validation", "test")
SEGMENT_PREFIX = "segment."


@dataclass(frozen=True, slots=True)
class SplitSpec:
    """A validated split request: shares that sum to 1, a group key, a seed."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    key: str = "external_id"
    seed: int = 0
    # "hash" (the above) or "time": by the prediction's occurred_at against two cut-offs
    # (ISO text in UTC): train before ``validation_from``, validation before ``test_from``,
    # test from then on.
    by: str = "hash"
    validation_from: str | None = None
    test_from: str | None = None

    @property
    def time_gold_split(self) -> str:
        """Where a gold row of the train period goes under a time split: validation, unless
        the validation period is empty."""
        return "test" if self.validation_from == self.test_from else "validation"

    @property
    def segment_key(self) -> str | None:
        return self.key[len(SEGMENT_PREFIX) :] if self.key.startswith(SEGMENT_PREFIX) else None

    @property
    def thresholds(self) -> tuple[float, float]:
        """Upper bounds of train and validation on u, computed once so Python and SQL compare
        u with the very same doubles."""
        return self.train, self.train + self.validation

    @property
    def gold_share(self) -> float:
        """Share of a gold group's rescaled u that goes to validation (the rest to test)."""
        rest = self.validation + self.test
        return self.validation / rest if rest > 0 else 0.0

    def as_dict(self) -> dict:
        if self.by == "time":
            return {
                "by": "time",
                "validation_from": self.validation_from,
                "test_from": self.test_from,
            }
        return {
            "by": "hash",
            "train": self.train,
            "validation": self.validation,
            "test": self.test,
            "key": self.key,
            "seed": self.seed,
        }


def split_of(u: float, spec: SplitSpec, *, gold: bool = False) -> str:
    """The split of a group with uniform ``u``; ``gold`` groups are kept out of train."""
    train_until, validation_until = spec.thresholds
    if u < train_until:
        if not gold:
            return "train"
        # Rescaled, u / train is uniform in [0, 1) given u < train: place the group among the
        # rest. Written as a product so SQL (which compares the same way) agrees to the bit.
        return "validation" if u < spec.train * spec.gold_share else "test"
    if u < validation_until:
        return "validation"
    return "test"


def group_key_of(spec: SplitSpec, *, external_id: str, segment: dict | None) -> str:
    """The group key of a row, as the SQL expressions compute it (missing segment value: "")."""
    name = spec.segment_key
    if name is None:
        return external_id
    value = (segment or {}).get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def split_for_row(
    spec: SplitSpec, *, external_id: str, segment: dict | None, gold_groups: set[str]
) -> str:
    key = group_key_of(spec, external_id=external_id, segment=segment)
    return split_of(group_uniform(spec.seed, key), spec, gold=key in gold_groups)


# --- SQL -------------------------------------------------------------------------------------


def group_key_expression(spec: SplitSpec, prefix: str = "prediction__") -> Expression:
    """The group key of a queue item (``prefix`` reaches the prediction) as a Django expression."""
    name = spec.segment_key
    if name is None:
        return F(f"{prefix}external_id")
    return Coalesce(KeyTextTransform(name, f"{prefix}segment"), Value(""), output_field=CharField())


def split_expression(spec: SplitSpec, *, gold_groups: Sequence[str], u: str = "split_u") -> Case:
    """``CASE`` giving the split from an annotated uniform ``u`` and group key ``split_key``
    (a time split: from the prediction's ``occurred_at``, and ``split_key`` its external id)."""
    if spec.by == "time":
        from .selectors.exports import as_datetime

        validation_from = as_datetime(spec.validation_from)
        test_from = as_datetime(spec.test_from)
        before = Q(prediction__occurred_at__lt=validation_from)
        time_whens = []
        if gold_groups:
            time_whens.append(
                When(
                    before & Q(split_key__in=list(gold_groups)),
                    then=Value(spec.time_gold_split),
                )
            )
        time_whens += [
            When(before, then=Value("train")),
            When(prediction__occurred_at__lt=test_from, then=Value("validation")),
        ]
        return Case(*time_whens, default=Value("test"), output_field=CharField())
    train_until, validation_until = spec.thresholds
    whens = []
    if gold_groups:
        gold = Q(split_key__in=list(gold_groups)) & Q(**{f"{u}__lt": train_until})
        # Same rescaling as split_of: u / train against the validation share of the rest.
        whens.append(
            When(
                gold & Q(**{f"{u}__lt": train_until * spec.gold_share}),
                then=Value("validation"),
            )
        )
        whens.append(When(gold, then=Value("test")))
    whens += [
        When(**{f"{u}__lt": train_until}, then=Value("train")),
        When(**{f"{u}__lt": validation_until}, then=Value("validation")),
    ]
    return Case(*whens, default=Value("test"), output_field=CharField())


def sql_group_uniform(seed_sql: str, key_sql: str) -> str:
    """:func:`group_uniform` as a PostgreSQL expression over two SQL snippets."""
    return (
        f"(('x' || substr(md5(CAST({seed_sql} AS text) || ':' || CAST({key_sql} AS text)), 1, 8))"
        "::bit(32)::bigint::double precision / 4294967296.0)"
    )


def sql_split_case(spec: SplitSpec, *, u_sql: str, gold_sql: str | None) -> str:
    """The split for PostgreSQL; ``gold_sql`` is a boolean expression (or None).

    ``width_bucket`` counts the thresholds at or below u, so ``u_sql`` (an md5) is evaluated
    once per row; thresholds are written with ``repr`` so PostgreSQL compares u with the very
    doubles Python uses. A gold group below train goes to validation under train · share
    (the rescaling of :func:`split_of`, without a division) and to test above it.
    """
    train_until, validation_until = spec.thresholds
    plain = (
        f"(ARRAY['train', 'validation', 'test'])[width_bucket({u_sql}, "
        f"ARRAY[{train_until!r}, {validation_until!r}]::float8[]) + 1]"
    )
    if not gold_sql:
        return plain
    gold = (
        f"(ARRAY['validation', 'test', 'validation', 'test'])[width_bucket({u_sql}, "
        f"ARRAY[{train_until * spec.gold_share!r}, {train_until!r}, {validation_until!r}]"
        "::float8[]) + 1]"
    )
    return f"(CASE WHEN {gold_sql} THEN {gold} ELSE {plain} END)"
