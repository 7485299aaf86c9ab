"""Dataset readers (ImageFolder, tar archives, IDX, npz, digits, VOC, mosaics) and split rules."""
