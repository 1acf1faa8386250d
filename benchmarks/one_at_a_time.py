"""The yardstick for sweep throughput: one SAE at a time, the way the authors' toy code trains.

Per SAE: regenerate the data with Figure 21's loop, wrap it in a per-sample Dataset behind a shuffled
DataLoader, train an nn.Module SAE with Adam, read the loss back every step. Same model, loss and
settings as randsae's batched trainer; only the machinery differs.
"""

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split

from randsae.data.sharkey import generate_reference


class PairDataset(Dataset):
    def __init__(self, samples: torch.Tensor):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx):
        return self.samples[idx], self.samples[idx]


class SingleSAE(nn.Module):
    def __init__(self, num_inputs: int, num_latents: int):
        super().__init__()
        self.encoder = nn.Linear(num_inputs, num_latents)
        self.decoder = nn.Linear(num_latents, num_inputs, bias=False)
        nn.init.orthogonal_(self.decoder.weight)

    def forward(self, x):
        mean, std = x.mean(dim=-1, keepdim=True), x.std(dim=-1, keepdim=True).clamp_min(1e-8)
        z = torch.relu(self.encoder((x - mean) / std))
        return self.decoder(z) * std + mean, z


def train_one(l1_coef: float, seed: int, num_latents: int, epochs: int, num_samples: int = 10_000,
              batch_size: int = 256, lr: float = 1e-3, device: str = "cpu", num_inputs: int = 256,
              num_features: int = 512) -> float:
    """Train one SAE from scratch, data included; returns wall seconds."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    samples = generate_reference(num_samples, num_inputs=num_inputs, num_features=num_features, seed=seed).samples
    train_set, _ = random_split(PairDataset(samples), [0.9, 0.1])
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    model = SingleSAE(samples.shape[1], num_latents).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for x, _ in loader:
            x = x.to(device)
            with torch.no_grad():
                model.decoder.weight /= model.decoder.weight.norm(dim=0, keepdim=True)
            x_hat, z = model(x)
            loss = nn.functional.mse_loss(x_hat, x) + l1_coef * z.abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start
