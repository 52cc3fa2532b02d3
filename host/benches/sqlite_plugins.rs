fn main() {} // placeholder until the sqlite benchmark lands
