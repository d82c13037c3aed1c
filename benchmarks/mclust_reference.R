# R mclust's side of benchmarks/bench_mclust.py (see its docstring).
#
# Fit:    Rscript mclust_reference.R fit IN.csv OUT.json [--params]
#   Reads a CSV (header row, numeric columns only), times the Mclust call alone
#   (Mclust(X, G = 1:9, modelNames = c("VII", "VVI", "EEE", "VVV")), all else
#   mclust's defaults: its hierarchical agglomeration start on SVD-scaled data)
#   with system.time (wall clock, "elapsed"), and writes JSON: the time, the
#   BIC table in skvi's sign (skvi's BIC = -(mclust's BIC); mclust's is
#   2 logL - npar log n, larger is better), the pick, and mclust/R versions.
#   With --params it also refits every cell from the BIC object (untimed) and
#   writes its parameters and log-likelihood, for the "same start" check.
# Export: Rscript mclust_reference.R export NAME OUT.csv
#   Writes the numeric columns of mclust's data set NAME (class labels dropped).
suppressPackageStartupMessages(library(mclust))

MODELS <- c("VII", "VVI", "EEE", "VVV")
G_RANGE <- 1:9

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) {
  stop("usage: mclust_reference.R fit IN.csv OUT.json [--params] | export NAME OUT.csv")
}

if (args[1] == "export") {
  env <- new.env()
  data(list = args[2], package = "mclust", envir = env)
  X <- as.data.frame(get(args[2], envir = env))
  X <- X[, vapply(X, is.numeric, logical(1)), drop = FALSE]
  write.csv(X, args[3], row.names = FALSE)
  quit(status = 0)
}

X <- as.matrix(read.csv(args[2]))
elapsed <- system.time(
  fit <- Mclust(X, G = G_RANGE, modelNames = MODELS, verbose = FALSE)
)[["elapsed"]]

bic <- fit$BIC
cells <- list()
for (model in MODELS) {
  for (g in G_RANGE) {
    value <- bic[as.character(g), model]
    cell <- list(model = model, G = g,
                 bic = if (is.na(value)) NA else -value)
    if ("--params" %in% args && !is.na(value)) {
      one <- Mclust(X, G = g, modelNames = model, x = bic, verbose = FALSE)
      sigma <- one$parameters$variance$sigma
      cell$loglik <- one$loglik
      cell$npar <- nMclustParams(model, ncol(X), g)
      cell$pro <- as.numeric(one$parameters$pro)
      cell$mean <- unname(lapply(seq_len(g), function(k) unname(one$parameters$mean[, k])))
      cell$sigma <- unname(lapply(seq_len(g), function(k) unname(sigma[, , k])))
    }
    cells[[length(cells) + 1]] <- cell
  }
}

result <- list(
  seconds = elapsed,
  n = nrow(X), d = ncol(X),
  pick = list(model = fit$modelName, G = fit$G, bic = -fit$bic),
  cells = cells,
  mclust_version = as.character(packageVersion("mclust")),
  r_version = R.version.string,
  blas = as.character(extSoftVersion()[["BLAS"]])
)
jsonlite::write_json(result, args[3], auto_unbox = TRUE, digits = NA,
                     na = "null", matrix = "rowmajor")
