"""Train a denoiser: ``python train.py [group=option ...]``; see ssdn/conf/ and README.md."""

from ssdn.train import main

if __name__ == "__main__":
    main()
