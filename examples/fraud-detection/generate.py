"""Generate a synthetic card-transaction dataset for the fraud-detection example.

No real dataset can be downloaded here, so this writes one: card transactions with the
columns a card issuer's fraud model sees, about 0.35 % of them fraudulent, the fraudulent
ones drawn from distributions that differ plausibly (more e-commerce and cash withdrawals,
risky merchant categories, foreign countries, night hours, far from home, bursts of
transactions, larger amounts) but overlap the legitimate ones, so that a model has something
to learn and cannot be perfect.

The output is a pure function of ``--rows`` and ``--seed``: the same arguments give the same
bytes (seeded NumPy generator, fixed-precision formatting, no wall clock).

    python generate.py --rows 300000 --out transactions.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final, TextIO

import numpy as np
import numpy.typing as npt

DEFAULT_ROWS: Final = 300_000
DEFAULT_SEED: Final = 20_251_122
FRAUD_RATE: Final = 0.0035
FRAUD_LOOK: Final = 0.55
DAYS: Final = 90
START_ISO: Final = "2025-01-01T00:00:00"

COLUMNS: Final = (
    "transaction_id",
    "timestamp",
    "card_id",
    "merchant_category",
    "amount",
    "currency",
    "country",
    "channel",
    "card_present",
    "hour",
    "distance_from_home_km",
    "txn_count_1h",
    "txn_count_24h",
    "merchant_risk_score",
    "is_fraud",
)

# Merchant category codes (ISO 18245): code, channel ("pos", "ecom" or "atm"), the median
# amount in EUR, and the weight among legitimate and fraudulent transactions.
MCCS: Final = (
    ("5411", "pos", 38.0, 0.22, 0.03),  # grocery stores
    ("5812", "pos", 27.0, 0.14, 0.02),  # restaurants
    ("5541", "pos", 55.0, 0.09, 0.03),  # service stations
    ("4111", "pos", 4.5, 0.06, 0.01),  # local transport
    ("5311", "pos", 62.0, 0.06, 0.03),  # department stores
    ("5691", "pos", 70.0, 0.05, 0.04),  # clothing
    ("7011", "pos", 180.0, 0.02, 0.03),  # hotels
    ("5999", "ecom", 35.0, 0.12, 0.10),  # miscellaneous retail (online)
    ("4814", "ecom", 30.0, 0.04, 0.04),  # telecommunication services
    ("4511", "ecom", 240.0, 0.03, 0.06),  # airlines
    ("5732", "ecom", 320.0, 0.04, 0.18),  # electronics
    ("5944", "ecom", 450.0, 0.01, 0.10),  # jewelry
    ("7995", "ecom", 60.0, 0.01, 0.08),  # gambling
    ("4829", "ecom", 200.0, 0.01, 0.10),  # money transfer
    ("6011", "atm", 120.0, 0.10, 0.15),  # ATM cash withdrawal
)

# Country, currency, share of card holders living there.
COUNTRIES: Final = (
    ("DE", "EUR", 0.30),
    ("FR", "EUR", 0.20),
    ("NL", "EUR", 0.10),
    ("ES", "EUR", 0.10),
    ("IT", "EUR", 0.10),
    ("GB", "GBP", 0.10),
    ("CH", "CHF", 0.05),
    ("US", "USD", 0.05),
)
# Foreign countries fraud tends to come from, besides the ones above.
FRAUD_ONLY_COUNTRIES: Final = (("BR", "BRL"), ("NG", "NGN"), ("RU", "RUB"), ("TH", "THB"))
# EUR per unit of each currency, to state amounts in the transaction's currency.
EUR_PER_UNIT: Final = {
    "EUR": 1.0,
    "GBP": 1.17,
    "CHF": 1.05,
    "USD": 0.92,
    "BRL": 0.17,
    "NGN": 0.0006,
    "RUB": 0.01,
    "THB": 0.026,
}

# Hour-of-day weights (0..23): card holders shop by day, fraud runs round the clock.
LEGIT_HOURS: Final = np.array(
    [10, 6, 4, 3, 3, 5, 15, 30, 45, 50, 55, 60, 70, 65, 55, 55, 60, 70, 75, 70, 55, 40, 30, 20],
    dtype=np.float64,
)
FRAUD_HOURS: Final = np.array(
    [40, 45, 50, 50, 45, 35, *[30] * 12, 35, 35, 40, 40, 40, 40], dtype=np.float64
)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def _choice(rng: np.random.Generator, n: int, weights: Floats) -> Ints:
    return rng.choice(len(weights), size=n, p=weights / weights.sum()).astype(np.int64)


def generate(rows: int, seed: int, out: TextIO) -> int:
    """Write ``rows`` transactions as CSV to ``out``; returns the number of fraudulent ones."""
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)
    # Labels first: a fixed share, at least one fraud so that every dataset has both classes.
    is_fraud = rng.random(rows) < FRAUD_RATE
    if rows > 1 and not is_fraud.any():
        is_fraud[rng.integers(rows)] = True
    n_fraud = int(is_fraud.sum())

    def fraud() -> npt.NDArray[np.bool_]:
        # Each feature of a fraudulent transaction looks fraudulent only some of the time
        # (fraudsters imitate card holders), so no single feature gives fraud away.
        return is_fraud & (rng.random(rows) < FRAUD_LOOK)

    # Cards: about 25 transactions each on average over the period; each lives in a country.
    n_cards = max(1, rows // 25)
    home_weights = np.array([w for _, _, w in COUNTRIES])
    card_home = _choice(rng, n_cards, home_weights)
    card = rng.integers(0, n_cards, size=rows)
    home = card_home[card]

    # Merchant category, and from it the channel and the typical amount.
    mcc = np.where(
        fraud(),
        _choice(rng, rows, np.array([m[4] for m in MCCS])),
        _choice(rng, rows, np.array([m[3] for m in MCCS])),
    )
    channel = np.array([m[1] for m in MCCS])[mcc]
    median_eur = np.array([m[2] for m in MCCS])[mcc]
    # Fraudsters cash out: larger amounts than the category's usual, with a wider spread.
    amount_eur = np.where(
        fraud(),
        median_eur * rng.lognormal(0.6, 0.9, size=rows),
        median_eur * rng.lognormal(0.0, 0.7, size=rows),
    )
    amount_eur = np.clip(amount_eur, 0.5, 20_000.0)

    # Country: mostly at home; fraud often abroad, sometimes from countries no card lives in.
    n_home = len(COUNTRIES)
    all_countries = [c for c, _, _ in COUNTRIES] + [c for c, _ in FRAUD_ONLY_COUNTRIES]
    all_currencies = [cur for _, cur, _ in COUNTRIES] + [cur for _, cur in FRAUD_ONLY_COUNTRIES]
    abroad = np.where(fraud(), rng.random(rows) < 0.45, rng.random(rows) < 0.04)
    foreign_pool = np.where(
        is_fraud & (rng.random(rows) < 0.5),
        n_home + rng.integers(0, len(FRAUD_ONLY_COUNTRIES), size=rows),
        rng.integers(0, n_home, size=rows),
    )
    # A "foreign" draw that lands on the home country is shifted to the next one.
    foreign = np.where(foreign_pool == home, (foreign_pool + 1) % n_home, foreign_pool)
    country = np.where(abroad, foreign, home)
    currency = np.array(all_currencies)[country]
    rate = np.array([EUR_PER_UNIT[c] for c in all_currencies])[country]
    amount = np.round(amount_eur / rate, 2)

    # Distance from home: a few km for everyday shopping, hundreds abroad; fraud is farther.
    distance = np.where(
        abroad,
        rng.lognormal(6.5, 0.8, size=rows),
        np.where(fraud(), rng.lognormal(3.0, 1.2, size=rows), rng.lognormal(1.6, 0.9, size=rows)),
    )
    distance = np.round(np.clip(distance, 0.0, 15_000.0), 1)

    # Time: uniform over the period, hours from the profile of the transaction's kind.
    day = rng.integers(0, DAYS, size=rows)
    hour = np.where(fraud(), _choice(rng, rows, FRAUD_HOURS), _choice(rng, rows, LEGIT_HOURS))
    second_of_hour = rng.integers(0, 3600, size=rows)
    seconds = day * 86_400 + hour * 3600 + second_of_hour

    # Velocity: fraud comes in bursts on a compromised card.
    count_1h = np.where(fraud(), 1 + rng.poisson(2.0, size=rows), rng.poisson(0.15, size=rows))
    count_24h = count_1h + np.where(
        fraud(), rng.poisson(5.0, size=rows), rng.poisson(2.5, size=rows)
    )
    risk = np.round(
        np.where(fraud(), rng.beta(4.0, 4.0, size=rows), rng.beta(2.0, 9.0, size=rows)), 3
    )
    card_present = (channel != "ecom").astype(np.int64)

    # Chronological order, then ids in that order. Columns are formatted whole, then joined.
    o = np.argsort(seconds, kind="stable")
    stamps = np.datetime_as_string(
        np.datetime64(START_ISO, "s") + seconds[o].astype("timedelta64[s]"), unit="s"
    )
    mcc_codes = np.array([m[0] for m in MCCS])
    columns: list[list[str]] = [
        [f"t{i:09d}" for i in range(1, rows + 1)],
        [f"{s}Z" for s in stamps.tolist()],
        [f"c{c:07d}" for c in card[o].tolist()],
        mcc_codes[mcc[o]].tolist(),
        [f"{a:.2f}" for a in amount[o].tolist()],
        currency[o].tolist(),
        np.array(all_countries)[country[o]].tolist(),
        channel[o].tolist(),
        [str(v) for v in card_present[o].tolist()],
        [str(v) for v in hour[o].tolist()],
        [f"{d:.1f}" for d in distance[o].tolist()],
        [str(v) for v in count_1h[o].tolist()],
        [str(v) for v in count_24h[o].tolist()],
        [f"{r:.3f}" for r in risk[o].tolist()],
        [str(v) for v in is_fraud[o].astype(np.int64).tolist()],
    ]
    out.write(",".join(COLUMNS) + "\n")
    for line in zip(*columns, strict=True):
        out.write(",".join(line) + "\n")
    return n_fraud


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="number of transactions")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--out", type=Path, help="output CSV file (default: standard output)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.out is None:
        n_fraud = generate(args.rows, args.seed, sys.stdout)
    else:
        # Write beside the target and rename, so an interrupted run leaves no half file.
        tmp = args.out.with_name(args.out.name + ".partial")
        with open(tmp, "w", encoding="ascii", newline="") as f:
            n_fraud = generate(args.rows, args.seed, f)
        tmp.replace(args.out)
    print(
        f"generated {args.rows} transactions, {n_fraud} fraudulent "
        f"({100 * n_fraud / args.rows:.2f} %)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
