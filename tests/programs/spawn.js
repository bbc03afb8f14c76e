// node with a child from child_process.spawn (libuv gives its stdio
// socketpairs, AF_UNIX), writing a growing counter into argv[2] every 10 ms.
const { spawn } = require('child_process');
const fs = require('fs');
const child = spawn('sleep', ['1000']);
let n = 0;
setInterval(() => {
  n++;
  fs.writeFileSync(process.argv[2] + '.tmp', String(n));
  fs.renameSync(process.argv[2] + '.tmp', process.argv[2]);
}, 10);
console.log('child ' + child.pid);
