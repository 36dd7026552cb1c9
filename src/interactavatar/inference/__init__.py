"""Generation: the diffusers-style pipeline over a model directory, release test cases, the endpoint
client, and the `generate` command."""
