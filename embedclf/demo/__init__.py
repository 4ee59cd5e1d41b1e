"""Demo dataset shipped with embedclf: a small customer-support inbox, written for this project."""
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
TRAIN_CSV = DEMO_DIR / "support_train.csv"
HOLDOUT_CSV = DEMO_DIR / "support_holdout.csv"
