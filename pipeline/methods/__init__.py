"""One file per method, found by its name: classsr, ghost, csd, pcl."""
