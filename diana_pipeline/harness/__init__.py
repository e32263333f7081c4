"""What the tests, the benchmarks and the reliability suite share to run Diana: private
stacks on free ports, Kafka helpers, the repository's paths, reference statistics and the
sections they write into docs/. Nothing in the product imports it."""
