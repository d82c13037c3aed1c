# R mclust's side of benchmarks/bench_mclust.py (see its docstring).
#
# Fit:    Rscript mclust_reference.R fit IN.csv OUT.json MODELS [--params]
#   Reads a CSV (header row, numeric columns only), times the Mclust call alone
#   (Mclust(X, G = 1:9, modelNames = MODELS), MODELS a comma-separated list or
#   "all" for mclust's fourteen, which is what Mclust(X) fits by default; all
#   else mclust's defaults: its hierarchical agglomeration start on SVD-scaled
#   data) with system.time (wall clock, "elapsed"), and writes JSON: the time,
#   the BIC table in skvi's sign (skvi's BIC = -(mclust's BIC); mclust's is
#   2 logL - npar log n, larger is better), the pick, and mclust/R versions.
#   With --params it also refits every cell from the BIC object (untimed) and
#   writes its parameters and log-likelihood, for the "same start" check.
# Steps:  Rscript mclust_reference.R steps IN.csv OUT.json G1,G2,...
#   For each of the fourteen models and each G: mclust's fitted parameters
#   (pro, mean, sigma), loglik, BIC (skvi's sign) and nMclustParams; ONE
#   mstep applied to the estep of those parameters; and me run to
#   convergence from that estep (tolerances tightened: 1e-13 relative for the
#   iterative M-steps' inner loops, 1e-12 relative change of the loglik for
#   me), so that skvi's steps can be compared with mclust's to rounding.
# Hclass: Rscript mclust_reference.R hclass IN.csv OUT.csv GMAX
#   Writes mclust's initial partitions for G = 1..GMAX, one column per G:
#   hclass of the tree Mclust builds by default (hc with mclust.options'
#   hcModelName and hcUse, on every row: the data sets here have fewer rows
#   than mclust.options("subset")).
# Export: Rscript mclust_reference.R export NAME OUT.csv
#   Writes the numeric columns of the data set NAME (class labels dropped): one
#   of mclust's, else one of R's own datasets package (then its complete rows
#   only: airquality has NA entries, which Mclust does not take).
suppressPackageStartupMessages(library(mclust))

ALL_MODELS <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE",
                "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")
G_RANGE <- 1:9
STEP_CONTROL <- emControl(tol = c(1e-12, 1e-13))

as_cell_parameters <- function(parameters, g) {
  sigma <- parameters$variance$sigma
  list(
    pro = as.numeric(parameters$pro),
    mean = unname(lapply(seq_len(g), function(k) unname(parameters$mean[, k]))),
    sigma = unname(lapply(seq_len(g), function(k) unname(sigma[, , k])))
  )
}

write_result <- function(result, path) {
  jsonlite::write_json(result, path, auto_unbox = TRUE, digits = NA,
                       na = "null", matrix = "rowmajor")
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) {
  stop(paste("usage: mclust_reference.R fit IN.csv OUT.json MODELS [--params]",
             "| steps IN.csv OUT.json G1,G2 | hclass IN.csv OUT.csv GMAX",
             "| export NAME OUT.csv"))
}

if (args[1] == "export") {
  env <- new.env()
  if (args[2] %in% data(package = "mclust")$results[, "Item"]) {
    data(list = args[2], package = "mclust", envir = env)
    X <- as.data.frame(get(args[2], envir = env))
  } else {
    X <- as.data.frame(get(args[2], envir = as.environment("package:datasets")))
  }
  X <- X[, vapply(X, is.numeric, logical(1)), drop = FALSE]
  X <- X[complete.cases(X), , drop = FALSE]
  write.csv(X, args[3], row.names = FALSE)
  quit(status = 0)
}

X <- as.matrix(read.csv(args[2]))

if (args[1] == "hclass") {
  tree <- hc(X, modelName = mclust.options("hcModelName"),
             use = mclust.options("hcUse"))
  write.csv(hclass(tree, seq_len(as.integer(args[4]))), args[3],
            row.names = FALSE)
  quit(status = 0)
}

if (args[1] == "steps") {
  cells <- list()
  for (g in as.integer(strsplit(args[4], ",")[[1]])) {
    bic <- mclustBIC(X, G = g, modelNames = ALL_MODELS, verbose = FALSE)
    for (model in ALL_MODELS) {
      value <- bic[as.character(g), model]
      cell <- list(model = model, G = g, npar = nMclustParams(model, ncol(X), g))
      if (is.na(value)) {
        cells[[length(cells) + 1]] <- c(cell, list(bic = NA))
        next
      }
      fit <- Mclust(X, G = g, modelNames = model, x = bic, verbose = FALSE)
      cell <- c(cell, list(bic = -fit$bic, loglik = fit$loglik),
                as_cell_parameters(fit$parameters, g))
      # With one component mclust stores the fit as XII, XXI or XXX, which
      # estep does not take; its E-step is trivial.
      z <- if (g == 1) matrix(1, nrow(X), 1) else
        estep(data = X, modelName = model, parameters = fit$parameters)$z
      one <- mstep(data = X, modelName = model, z = z, control = STEP_CONTROL)
      if (!anyNA(one$parameters$variance$sigma)) {
        cell$one_step <- as_cell_parameters(one$parameters, g)
      }
      run <- me(data = X, modelName = model, z = z, control = STEP_CONTROL)
      if (!is.na(run$loglik)) {
        cell$me <- c(list(loglik = run$loglik,
                          iterations = unname(attr(run, "info")[1])),
                     as_cell_parameters(run$parameters, g))
      }
      cells[[length(cells) + 1]] <- cell
    }
  }
  write_result(list(n = nrow(X), d = ncol(X), cells = cells,
                    mclust_version = as.character(packageVersion("mclust"))),
               args[3])
  quit(status = 0)
}

MODELS <- if (args[4] == "all") ALL_MODELS else strsplit(args[4], ",")[[1]]
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
      cell <- c(cell, list(loglik = one$loglik,
                           npar = nMclustParams(model, ncol(X), g)),
                as_cell_parameters(one$parameters, g))
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
write_result(result, args[3])
