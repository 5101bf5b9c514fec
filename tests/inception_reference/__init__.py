"""Reference data from pytorch-fid for the InceptionV3 (FID) tests (see make_fixture.py)."""
