import torch
import torch.nn as nn
import torch.optim as optim

# 加载数据
from torchvision import datasets, transforms

# 数据预处理
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

# 加载训练集和测试集
train_dataset = datasets.MNIST(root='./data', train=True, download=True, transform=transform)
test_dataset = datasets.MNIST(root='./data', train=False, download=True, transform=transform)

# 构建模型
class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim):
        super(MLP, self).__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = self.fc3(x)
        return x

# 初始化模型
input_dim = 784
hidden_dim = 128
output_dim = 10
model = MLP(input_dim, hidden_dim, output_dim)

# 初始化参数
model.fc1.weight.data.uniform_(-0.1, 0.1)
model.fc1.bias.data.fill_(0)
model.fc2.weight.data.uniform_(-0.1, 0.1)
model.fc2.bias.data.fill_(0)
model.fc3.weight.data.uniform_(-0.1, 0.1)
model.fc3.bias.data.fill_(0)

# 定义损失函数和优化算法
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=0.001)

# 训练模型
num_epochs = 10
for epoch in range(num_epochs):
    train_loss = 0
    for data, target in train_loader:
        optimizer.zero_grad()
        output = model(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
    print('Train Epoch: {}/{}, Loss: {:.4f}'.format(epoch + 1, num_epochs, train_loss / len(train_loader)))

# 评估模型
correct = 0
total = 0
with torch.no_grad():
    for data, target in test_loader:
        output = model(data)
        _, predicted = torch.max(output.data, 1)
        total += target.size(0)
        correct += (predicted == target).sum().item()

print('Accuracy of the network on the 10000 test images: {} %'.format(100 * correct / total))
