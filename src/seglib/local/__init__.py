"""What only a local run needs: the local Spark and its jars (spark), the Spark server kept between runs
(server), the notebook runner behind `seglib run` (runner) and `seglib bench` (bench). Installed with the
local extra; no module a notebook imports depends on it."""
