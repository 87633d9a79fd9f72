"""MNIST: the files on disk (`files`), what is done to a batch (`transforms`), and the LightningDataModule
that splits, holds and batches them (`datamodule`). Importing this package loads none of them."""
