"""Reference data from timm/torchvision for the weight-import tests (see make_fixtures.py)."""
