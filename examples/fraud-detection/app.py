"""Fraud detection on card transactions: train a classifier, score a held-out period.

The workload of the confidential-AI example. It knows nothing about custodes or about
encryption: it reads a plaintext CSV from the path it is given (argument, or the
``FRAUD_DATASET`` environment variable) and prints its metrics.

The split is by time, as a card issuer would validate: the model learns from the first 75 %
of the period and is scored on the last 25 %. Training is deterministic (fixed seeds, no
early-stopping split drawn at random), so the same file gives the same metrics.

    python app.py transactions.csv [--threshold 0.9] [--metrics-json metrics.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]
from sklearn.metrics import (  # type: ignore[import-untyped]
    average_precision_score,
    confusion_matrix,
    roc_auc_score,
)

NUMERIC: Final = (
    "amount",
    "card_present",
    "hour",
    "distance_from_home_km",
    "txn_count_1h",
    "txn_count_24h",
    "merchant_risk_score",
)
CATEGORICAL: Final = ("merchant_category", "currency", "country", "channel")
LABEL: Final = "is_fraud"
TRAIN_SHARE: Final = 0.75
SEED: Final = 7

Matrix = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]


class DatasetError(Exception):
    """The input is not a transactions CSV this model can learn from."""


@dataclass(frozen=True, slots=True)
class Metrics:
    transactions: int
    fraudulent: int
    train_rows: int
    test_rows: int
    test_fraudulent: int
    roc_auc: float
    average_precision: float
    threshold: float
    precision: float
    recall: float
    true_negatives: int
    false_positives: int
    false_negatives: int
    true_positives: int


def load(path: Path) -> tuple[Matrix, Labels, list[int]]:
    """Features (ordinal codes for categories), labels, and the categorical column indexes.
    Rows are in the file's (chronological) order."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {*NUMERIC, *CATEGORICAL, LABEL} - set(reader.fieldnames or ())
            if missing:
                raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows = list(reader)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from e
    if not rows:
        raise DatasetError(f"{path}: no transactions")
    try:
        numeric = np.array([[float(r[c]) for c in NUMERIC] for r in rows], dtype=np.float64)
        labels = np.array([int(r[LABEL]) for r in rows], dtype=np.int64)
    except ValueError as e:
        raise DatasetError(f"{path}: {e}") from e
    # Amounts are heavy-tailed; the log keeps the bins meaningful.
    numeric[:, 0] = np.log1p(numeric[:, 0])
    codes = []
    for c in CATEGORICAL:
        values = [r[c] for r in rows]
        vocabulary = {v: i for i, v in enumerate(sorted(set(values)))}
        codes.append([vocabulary[v] for v in values])
    categorical = np.array(codes, dtype=np.float64).T
    features = np.hstack([numeric, categorical])
    return features, labels, list(range(len(NUMERIC), len(NUMERIC) + len(CATEGORICAL)))


def evaluate(path: Path, threshold: float) -> Metrics:
    x, y, categorical = load(path)
    split = int(len(y) * TRAIN_SHARE)
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    if len(set(y_train.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        raise DatasetError("both periods need fraudulent and legitimate transactions")
    model = HistGradientBoostingClassifier(
        learning_rate=0.1,
        max_iter=150,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        categorical_features=categorical,
        # Fraud is rare: weigh the classes equally, or the model learns "never fraud".
        class_weight="balanced",
        early_stopping=False,
        random_state=SEED,
    )
    model.fit(x_train, y_train)
    scores = model.predict_proba(x_test)[:, 1]
    predicted = (scores >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_test, predicted, labels=[0, 1]).ravel())
    return Metrics(
        transactions=len(y),
        fraudulent=int(y.sum()),
        train_rows=len(y_train),
        test_rows=len(y_test),
        test_fraudulent=int(y_test.sum()),
        roc_auc=float(roc_auc_score(y_test, scores)),
        average_precision=float(average_precision_score(y_test, scores)),
        threshold=threshold,
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn) if tp + fn else 0.0,
        true_negatives=tn,
        false_positives=fp,
        false_negatives=fn,
        true_positives=tp,
    )


def report(m: Metrics) -> str:
    share = 100 * m.fraudulent / m.transactions
    return "\n".join(
        [
            f"fraud-detection: {m.transactions} transactions, {m.fraudulent} fraudulent "
            f"({share:.2f} %)",
            f"trained on the first {m.train_rows}, scored the last {m.test_rows} "
            f"({m.test_fraudulent} fraudulent)",
            f"ROC AUC            {m.roc_auc:.4f}",
            f"average precision  {m.average_precision:.4f}",
            f"at threshold {m.threshold:.2f}: precision {m.precision:.4f}, recall {m.recall:.4f}",
            "confusion matrix   predicted legit  predicted fraud",
            f"  actual legit     {m.true_negatives:>15}  {m.false_positives:>15}",
            f"  actual fraud     {m.false_negatives:>15}  {m.true_positives:>15}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dataset",
        nargs="?",
        type=Path,
        default=os.environ.get("FRAUD_DATASET"),
        help="transactions CSV (default: $FRAUD_DATASET)",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.9, help="fraud score threshold (default 0.9)"
    )
    parser.add_argument("--metrics-json", type=Path, help="also write the metrics as JSON here")
    args = parser.parse_args(argv)
    if args.dataset is None:
        parser.error("no dataset: pass a CSV path or set FRAUD_DATASET")
    if not (0.0 < args.threshold < 1.0) or math.isnan(args.threshold):
        parser.error("--threshold must be between 0 and 1")
    try:
        metrics = evaluate(Path(args.dataset), args.threshold)
    except DatasetError as e:
        print(f"fraud-detection: error: {e}", file=sys.stderr)
        return 1
    print(report(metrics), flush=True)
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(asdict(metrics), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
