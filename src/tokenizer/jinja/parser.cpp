#include "tokenizer/jinja/parser.h"

#include <charconv>
#include <initializer_list>

#include "core/error.h"
#include "tokenizer/jinja/lexer.h"

namespace lserve::jinja {
namespace {

// Templates are untrusted: nesting beyond this (brackets, operators, blocks) is refused rather
// than recursed into until the stack runs out.
constexpr int kMaxParseDepth = 100;

ExprPtr make(ExprKind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body parse_template() {
    std::string end;
    Body body = parse_body({}, &end);
    return body;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : p(p) {
      if (++p.depth_ > kMaxParseDepth) {
        p.fail_here("the template nests deeper than {} levels", kMaxParseDepth);
      }
    }
    ~DepthGuard() { --p.depth_; }
    Parser& p;
  };

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  void advance() {
    if (i_ + 1 < t_.size()) ++i_;
  }

  template <typename... Args>
  [[noreturn]] void fail_here(fmt::format_string<Args...> f, Args&&... args) const {
    fail("line {}: {}", cur().line, fmt::format(f, std::forward<Args>(args)...));
  }

  bool is_op(std::string_view op) const {
    return cur().type == TokenType::kOperator && cur().value == op;
  }
  bool is_name(std::string_view name) const {
    return cur().type == TokenType::kName && cur().value == name;
  }
  bool accept_op(std::string_view op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool accept_name(std::string_view name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  void expect_op(std::string_view op) {
    if (!accept_op(op)) fail_here("expected '{}', found {}", op, describe());
  }
  std::string expect_name() {
    if (cur().type != TokenType::kName) fail_here("expected a name, found {}", describe());
    std::string name = cur().value;
    advance();
    return name;
  }
  void expect_block_end() {
    if (cur().type != TokenType::kBlockEnd) fail_here("expected '%}}', found {}", describe());
    advance();
  }
  std::string describe() const {
    switch (cur().type) {
      case TokenType::kText:
        return "template text";
      case TokenType::kVarBegin:
        return "'{{'";
      case TokenType::kVarEnd:
        return "'}}'";
      case TokenType::kBlockBegin:
        return "'{%'";
      case TokenType::kBlockEnd:
        return "'%}'";
      case TokenType::kEnd:
        return "the end of the template";
      case TokenType::kString:
        return "a string";
      default:
        return "'" + cur().value + "'";
    }
  }

  // Statements until `{% <one of ends> ...`; the end keyword is consumed and returned in *end
  // (empty at the end of the template, which is only allowed when `ends` is empty).
  Body parse_body(std::initializer_list<std::string_view> ends, std::string* end) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& tok = cur();
      if (tok.type == TokenType::kEnd) {
        if (ends.size() != 0) {
          fail_here("unexpected end of template; expected {{% {} %}}", *ends.begin());
        }
        end->clear();
        return body;
      }
      if (tok.type == TokenType::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->line = tok.line;
        s->text = tok.value;
        body.push_back(std::move(s));
        advance();
      } else if (tok.type == TokenType::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->line = tok.line;
        advance();
        s->expr = parse_tuple(true);
        if (cur().type != TokenType::kVarEnd) fail_here("expected '}}}}', found {}", describe());
        advance();
        body.push_back(std::move(s));
      } else if (tok.type == TokenType::kBlockBegin) {
        advance();
        if (cur().type == TokenType::kName) {
          for (std::string_view e : ends) {
            if (cur().value == e) {
              *end = cur().value;
              advance();
              return body;
            }
          }
        }
        body.push_back(parse_statement());
      } else {
        fail_here("unexpected {}", describe());
      }
    }
  }

  StmtPtr parse_statement() {
    auto s = std::make_unique<Stmt>();
    s->line = cur().line;
    const std::string kw = cur().type == TokenType::kName ? cur().value : "";
    if (kw.empty()) fail_here("expected a statement, found {}", describe());
    advance();
    std::string end;
    if (kw == "if") {
      s->kind = StmtKind::kIf;
      s->conds.push_back(parse_tuple(false));
      expect_block_end();
      while (true) {
        s->bodies.push_back(parse_body({"elif", "else", "endif"}, &end));
        if (end == "elif") {
          s->conds.push_back(parse_tuple(false));
          expect_block_end();
        } else if (end == "else") {
          expect_block_end();
          s->bodies.push_back(parse_body({"endif"}, &end));
          break;
        } else {
          break;
        }
      }
    } else if (kw == "for") {
      s->kind = StmtKind::kFor;
      s->targets = parse_targets();
      if (!accept_name("in")) fail_here("expected 'in', found {}", describe());
      s->expr = parse_tuple(false);
      if (accept_name("if")) s->cond = parse_expression(true);
      if (is_name("recursive")) fail_here("recursive loops are not supported");
      expect_block_end();
      s->bodies.push_back(parse_body({"else", "endfor"}, &end));
      if (end == "else") {
        expect_block_end();
        s->bodies.push_back(parse_body({"endfor"}, &end));
      }
    } else if (kw == "set") {
      if (cur().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().value == ".") {
        s->targets.push_back(expect_name());
        advance();
        s->name = expect_name();
        expect_op("=");
        s->kind = StmtKind::kSet;
        s->expr = parse_tuple(true);
      } else {
        s->targets = parse_targets();
        if (accept_op("=")) {
          s->kind = StmtKind::kSet;
          s->expr = parse_tuple(true);
        } else {
          if (s->targets.size() != 1) fail_here("a block set assigns one name");
          if (is_op("|")) fail_here("filters on a block set are not supported");
          s->kind = StmtKind::kSetBlock;
          expect_block_end();
          s->bodies.push_back(parse_body({"endset"}, &end));
        }
      }
    } else if (kw == "macro") {
      s->kind = StmtKind::kMacro;
      s->name = expect_name();
      expect_op("(");
      while (!accept_op(")")) {
        if (!s->params.empty()) expect_op(",");
        if (accept_op(")")) break;
        std::string param = expect_name();
        ExprPtr def = accept_op("=") ? parse_expression(true) : nullptr;
        s->params.emplace_back(std::move(param), std::move(def));
      }
      expect_block_end();
      s->bodies.push_back(parse_body({"endmacro"}, &end));
      if (cur().type == TokenType::kName && cur().value == s->name) advance();
    } else if (kw == "filter") {
      s->kind = StmtKind::kFilter;
      s->expr = parse_filter(nullptr);
      expect_block_end();
      s->bodies.push_back(parse_body({"endfilter"}, &end));
    } else if (kw == "break" || kw == "continue") {
      s->kind = kw == "break" ? StmtKind::kBreak : StmtKind::kContinue;
    } else if (kw == "generation") {
      s->kind = StmtKind::kGeneration;
      expect_block_end();
      s->bodies.push_back(parse_body({"endgeneration"}, &end));
    } else {
      fail("line {}: the statement '{}' is not supported", s->line, kw);
    }
    expect_block_end();
    return s;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    const bool paren = accept_op("(");
    do {
      names.push_back(expect_name());
    } while (accept_op(",") && cur().type == TokenType::kName);
    if (paren) expect_op(")");
    return names;
  }

  // Comma-separated expressions: a tuple (a list here) when there is a comma.
  ExprPtr parse_tuple(bool with_condexpr) {
    const int line = cur().line;
    ExprPtr first = parse_expression(with_condexpr);
    if (!is_op(",")) return first;
    auto list = make(ExprKind::kList, line);
    list->tuple = true;
    list->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (at_expression_end()) break;
      list->args.push_back(parse_expression(with_condexpr));
    }
    return list;
  }

  bool at_expression_end() const {
    return cur().type == TokenType::kVarEnd || cur().type == TokenType::kBlockEnd || is_op(")") ||
           is_op("]") || is_op("}") || is_name("if") || is_name("in");
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    if (!with_condexpr) return parse_or();
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      const int line = cur().line;
      advance();
      auto cond = make(ExprKind::kCond, line);
      cond->args.push_back(std::move(expr));
      cond->args.push_back(parse_or());
      cond->args.push_back(accept_name("else") ? parse_expression(true) : nullptr);
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, int line) {
    auto e = make(ExprKind::kBinary, line);
    e->name = std::move(op);
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const int line = cur().line;
      advance();
      left = binary("or", std::move(left), parse_and(), line);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const int line = cur().line;
      advance();
      left = binary("and", std::move(left), parse_not(), line);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = make(ExprKind::kUnary, cur().line);
      advance();
      e->name = "not";
      e->target = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == TokenType::kOperator &&
          (cur().value == "==" || cur().value == "!=" || cur().value == "<" || cur().value == ">" ||
           cur().value == "<=" || cur().value == ">=")) {
        op = cur().value;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == TokenType::kName && peek().value == "in") {
        op = "not in";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ExprKind::kCompare, line);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(std::move(op));
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token op = cur();
      advance();
      left = binary(op.value, std::move(left), parse_concat(), op.line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const int line = cur().line;
      advance();
      left = binary("~", std::move(left), parse_math2(), line);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token op = cur();
      advance();
      left = binary(op.value, std::move(left), parse_pow(), op.line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const int line = cur().line;
      advance();
      left = binary("**", std::move(left), parse_unary(true), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make(ExprKind::kUnary, cur().line);
      node->name = cur().value;
      advance();
      node->target = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token tok = cur();
    if (tok.type == TokenType::kName) {
      advance();
      auto e = make(ExprKind::kLiteral, tok.line);
      if (tok.value == "true" || tok.value == "True") {
        e->literal = Value::boolean(true);
      } else if (tok.value == "false" || tok.value == "False") {
        e->literal = Value::boolean(false);
      } else if (tok.value == "none" || tok.value == "None") {
        e->literal = Value::none();
      } else {
        e->kind = ExprKind::kName;
        e->name = tok.value;
      }
      return e;
    }
    if (tok.type == TokenType::kString) {
      std::string s;
      while (cur().type == TokenType::kString) {  // adjacent literals concatenate
        s += cur().value;
        advance();
      }
      auto e = make(ExprKind::kLiteral, tok.line);
      e->literal = Value::string(std::move(s));
      return e;
    }
    if (tok.type == TokenType::kInt || tok.type == TokenType::kFloat) {
      advance();
      auto e = make(ExprKind::kLiteral, tok.line);
      if (tok.type == TokenType::kInt) {
        int64_t v = 0;
        const auto r = std::from_chars(tok.value.data(), tok.value.data() + tok.value.size(), v);
        if (r.ec != std::errc()) fail("line {}: integer {} is out of range", tok.line, tok.value);
        e->literal = Value::integer(v);
      } else {
        e->literal = Value::number(std::strtod(tok.value.c_str(), nullptr));
      }
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) {
        auto e = make(ExprKind::kList, tok.line);
        e->tuple = true;
        return e;
      }
      ExprPtr inner = parse_tuple(true);
      expect_op(")");
      return inner;
    }
    if (accept_op("[")) {
      auto e = make(ExprKind::kList, tok.line);
      while (!accept_op("]")) {
        if (!e->args.empty()) {
          expect_op(",");
          if (accept_op("]")) break;
        }
        e->args.push_back(parse_expression(true));
      }
      return e;
    }
    if (accept_op("{")) {
      auto e = make(ExprKind::kDict, tok.line);
      while (!accept_op("}")) {
        if (!e->args.empty()) {
          expect_op(",");
          if (accept_op("}")) break;
        }
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args2.push_back(parse_expression(true));
      }
      return e;
    }
    fail_here("unexpected {}", describe());
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (accept_op(".")) {
        if (cur().type == TokenType::kInt) {
          auto e = make(ExprKind::kGetItem, line);
          auto idx = make(ExprKind::kLiteral, line);
          int64_t v = 0;
          const std::string& digits = cur().value;
          if (std::from_chars(digits.data(), digits.data() + digits.size(), v).ec != std::errc()) {
            fail_here("index {} is out of range", digits);
          }
          idx->literal = Value::integer(v);
          advance();
          e->target = std::move(node);
          e->args.push_back(std::move(idx));
          node = std::move(e);
          continue;
        }
        auto e = make(ExprKind::kGetAttr, line);
        e->name = expect_name();
        e->target = std::move(node);
        node = std::move(e);
      } else if (accept_op("[")) {
        node = parse_subscript(std::move(node), line);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target, int line) {
    ExprPtr parts[3];
    int part = 0;
    bool slice = false;
    while (!accept_op("]")) {
      if (accept_op(":")) {
        slice = true;
        if (++part > 2) fail_here("a slice has at most three parts");
        continue;
      }
      if (parts[part]) fail_here("expected ']' or ':', found {}", describe());
      parts[part] = parse_expression(true);
    }
    if (!slice && !parts[0]) fail_here("empty subscript");
    auto e = make(slice ? ExprKind::kSlice : ExprKind::kGetItem, line);
    e->target = std::move(target);
    if (!slice) {
      e->args.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) e->args.push_back(std::move(p));
    }
    return e;
  }

  // Arguments of a call, filter or test: positional, then name=value.
  void parse_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!accept_op(")")) {
      if (!first) {
        expect_op(",");
        if (accept_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**")) fail_here("*args and **kwargs in calls are not supported");
      if (cur().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().value == "=") {
        std::string name = cur().value;
        advance();
        advance();
        e.kwargs.emplace_back(std::move(name), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail_here("a positional argument follows a keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
  }

  ExprPtr parse_call(ExprPtr target) {
    auto e = make(ExprKind::kCall, cur().line);
    e->target = std::move(target);
    parse_args(*e);
    return e;
  }

  ExprPtr parse_filter(ExprPtr target) {
    auto e = make(ExprKind::kFilter, cur().line);
    e->name = expect_name();
    e->target = std::move(target);
    if (is_op("(")) parse_args(*e);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (accept_op("|")) {
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        auto e = make(ExprKind::kTest, cur().line);
        advance();
        e->negated = accept_name("not");
        e->name = expect_name();
        e->target = std::move(node);
        if (is_op("(")) {
          parse_args(*e);
        } else if ((cur().type == TokenType::kName || cur().type == TokenType::kString ||
                    cur().type == TokenType::kInt || cur().type == TokenType::kFloat ||
                    is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail_here("tests cannot be chained with 'is'");
          e->args.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(e);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse(std::string_view source) { return Parser(lex(source)).parse_template(); }

}  // namespace lserve::jinja
