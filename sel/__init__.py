"""sel-bench: Staged Embarrassment Learning benchmarked against a dense baseline and a Lottery
Ticket run on CIFAR-10. Everything here is testable without DVC or MLflow, but `tracking`."""
